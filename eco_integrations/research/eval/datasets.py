"""Loaders for TOFU, WMDP, MMLU and MUSE QA: from a local folder laid out like the
project's shared data, or from the Hugging Face hub with ``datasets``.

Every multiple-choice loader (WMDP, MMLU) returns the same row shape, so the guard and MCQ
harnesses treat both alike::

    {"question": str, "choices": [str, str, str, str], "answer": int (0-3), "subject": str}
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from ..._files import check_text_rows, read_json_rows, read_utf8
from ...exceptions import ConfigurationError

TOFU_SPLITS = (
    "full",
    "forget01",
    "forget05",
    "forget10",
    "retain99",
    "retain95",
    "retain90",
    "forget01_perturbed",
    "forget05_perturbed",
    "forget10_perturbed",
    "retain_perturbed",
    "real_authors",
    "real_authors_perturbed",
    "world_facts",
    "world_facts_perturbed",
)
TOFU_HUB_ID = "locuslab/TOFU"
# Each forget split and the retain split that completes it.
TOFU_FORGET_SPLITS = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}
TOFU_AUTHOR_ROWS = 20  # every TOFU author has 20 consecutive question/answer rows

WMDP_SUBJECTS = ("bio", "chem", "cyber")
WMDP_HUB_ID = "cais/wmdp"
# The topic line of the paper's zero-shot prompt for each WMDP subject.
WMDP_TOPICS = {"bio": "biology", "chem": "chemistry", "cyber": "cybersecurity"}

MMLU_SPLITS = ("test", "val", "dev")
MMLU_HUB_ID = "cais/mmlu"
_MMLU_HUB_SPLIT = {"test": "test", "val": "validation", "dev": "dev"}
# The subjects closest to WMDP's hazardous domains: where a WMDP guard is most likely to misfire.
MMLU_CLOSE_SUBJECTS = (
    "college_biology",
    "virology",
    "college_computer_science",
    "computer_security",
)

MUSE_CORPORA = ("news", "books")
MUSE_SPLITS = ("forget", "retain", "forget_icl", "retain_icl")
MUSE_HUB_IDS = {"news": "muse-bench/MUSE-News", "books": "muse-bench/MUSE-Books"}
# Local file names (renamed copies of MUSE's data/<corpus>/knowmem/*.json) and hub split names.
_MUSE_FILES = {
    "forget": "knowmem_forget_qa.json",
    "retain": "knowmem_retain2_qa.json",
    "forget_icl": "knowmem_forget_qa_icl.json",
    "retain_icl": "knowmem_retain2_qa_icl.json",
}
_MUSE_HUB_SPLITS = {
    "forget": "forget_qa",
    "retain": "retain_qa",
    "forget_icl": "forget_qa_icl",
    "retain_icl": "retain_qa_icl",
}
LETTERS = ("A", "B", "C", "D")


def _data_dir(data_dir: str | Path | None, sub: str) -> Path | None:
    if data_dir is None:
        return None
    root = Path(data_dir)
    folder = root / sub
    if not folder.is_dir():
        msg = f"{folder} does not exist; --data-dir must contain tofu/, wmdp/, mmlu/ and muse/ (see the data README)."
        raise ConfigurationError(msg)
    return folder


_AS_PUBLISHED = "the file as the data release publishes it (see the data README)"


def _read_rows(path: Path, fields: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """A data file's rows (JSON Lines or one JSON array), each an object holding ``fields``."""
    if not path.is_file():
        msg = f"Missing data file {path}; check --data-dir (see the data README for the layout)."
        raise ConfigurationError(msg)
    rows = read_json_rows(path, expected=_AS_PUBLISHED, error=ConfigurationError)
    return check_text_rows(
        rows, fields, where=path, fix=f"restore {_AS_PUBLISHED}", error=ConfigurationError
    )


def load_tofu(split: str, data_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Rows of a TOFU split (``question``, ``answer``, ...), in the published order."""
    if split not in TOFU_SPLITS:
        msg = f"Unknown TOFU split {split!r}; choose one of: {', '.join(TOFU_SPLITS)}."
        raise ConfigurationError(msg)
    folder = _data_dir(data_dir, "tofu")
    if folder is not None:
        return _read_rows(folder / f"{split}.json", ("question", "answer"))
    return _from_hub(TOFU_HUB_ID, split, "train")


def _mcq_row(question: Any, choices: Any, answer: Any, subject: str, where: str) -> dict[str, Any]:
    """Validate one multiple-choice row into the shared shape; ``where`` names it in errors."""
    if not isinstance(question, str) or not question.strip():
        msg = f"{where}: the question is missing or empty."
        raise ConfigurationError(msg)
    choices = list(choices) if isinstance(choices, (list, tuple)) else None
    if choices is None or len(choices) != 4 or not all(isinstance(c, str) for c in choices):
        msg = f"{where}: expected 4 answer choices (strings)."
        raise ConfigurationError(msg)
    if isinstance(answer, str) and answer.strip() in LETTERS:
        answer = LETTERS.index(answer.strip())
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer <= 3:
        msg = f"{where}: the answer must be an index 0-3 or a letter A-D, got {answer!r}."
        raise ConfigurationError(msg)
    return {"question": question, "choices": choices, "answer": answer, "subject": subject}


def load_wmdp(subject: str, data_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """WMDP multiple-choice questions of one subject (``bio``, ``chem``, ``cyber``), test split."""
    if subject not in WMDP_SUBJECTS:
        msg = f"Unknown WMDP subject {subject!r}; choose one of: {', '.join(WMDP_SUBJECTS)}."
        raise ConfigurationError(msg)
    folder = _data_dir(data_dir, "wmdp")
    raw = (
        _read_rows(folder / f"wmdp-{subject}.json")
        if folder is not None
        else _from_hub(WMDP_HUB_ID, f"wmdp-{subject}", "test")
    )
    return [
        _mcq_row(
            r.get("question"), r.get("choices"), r.get("answer"), subject, f"wmdp-{subject} row {i}"
        )
        for i, r in enumerate(raw)
    ]


def mmlu_subjects(data_dir: str | Path | None = None, split: str = "test") -> list[str]:
    """The MMLU subjects available (local: from the file names; hub: from the ``all`` config)."""
    _check_mmlu_split(split)
    folder = _data_dir(data_dir, "mmlu")
    if folder is not None:
        return sorted(
            p.name[: -len(f"_{split}.csv")] for p in (folder / split).glob(f"*_{split}.csv")
        )
    return sorted({r["subject"] for r in load_mmlu("all", split)})


def _check_mmlu_split(split: str) -> None:
    if split not in MMLU_SPLITS:
        msg = f"Unknown MMLU split {split!r}; choose one of: {', '.join(MMLU_SPLITS)}."
        raise ConfigurationError(msg)


def load_mmlu(
    subject: str, split: str = "test", data_dir: str | Path | None = None
) -> list[dict[str, Any]]:
    """MMLU questions of one subject (e.g. ``virology``), or of every subject with ``"all"``.

    Local files are the released CSVs (no header: question, A, B, C, D, answer letter); they hold
    commas, quotes and newlines inside fields, so they are read with the csv module.
    """
    _check_mmlu_split(split)
    folder = _data_dir(data_dir, "mmlu")
    if folder is None:
        raw = _from_hub(MMLU_HUB_ID, subject, _MMLU_HUB_SPLIT[split])
        return [
            _mcq_row(
                r.get("question"),
                r.get("choices"),
                r.get("answer"),
                r.get("subject") or subject,
                f"mmlu {subject}/{split} row {i}",
            )
            for i, r in enumerate(raw)
        ]
    subjects = mmlu_subjects(data_dir, split) if subject == "all" else [subject]
    rows: list[dict[str, Any]] = []
    for name in subjects:
        path = folder / split / f"{name}_{split}.csv"
        if not path.is_file():
            msg = f"No MMLU file {path}; known subjects: {', '.join(mmlu_subjects(data_dir, split)) or 'none'}."
            raise ConfigurationError(msg)
        text = read_utf8(path, expected=_AS_PUBLISHED, error=ConfigurationError)
        for i, rec in enumerate(csv.reader(io.StringIO(text, newline=""))):
            if len(rec) != 6:
                msg = f"{path} row {i + 1} has {len(rec)} columns; MMLU CSVs have 6 (question, A, B, C, D, answer)."
                raise ConfigurationError(msg)
            rows.append(_mcq_row(rec[0], rec[1:5], rec[5], name, f"{path} row {i + 1}"))
    return rows


def load_muse(
    corpus: str, split: str = "forget", data_dir: str | Path | None = None
) -> list[dict[str, Any]]:
    """MUSE knowledge-memorization QA (``question``, ``answer``) of ``news`` or ``books``.

    ``retain`` is MUSE's ``retain2`` QA set (the hub calls it ``retain_qa``).
    """
    if corpus not in MUSE_CORPORA:
        msg = f"Unknown MUSE corpus {corpus!r}; choose one of: {', '.join(MUSE_CORPORA)}."
        raise ConfigurationError(msg)
    if split not in MUSE_SPLITS:
        msg = f"Unknown MUSE split {split!r}; choose one of: {', '.join(MUSE_SPLITS)}."
        raise ConfigurationError(msg)
    folder = _data_dir(data_dir, "muse")
    if folder is not None:
        raw = _read_rows(folder / corpus / _MUSE_FILES[split])
    else:
        raw = _from_hub(MUSE_HUB_IDS[corpus], "knowmem", _MUSE_HUB_SPLITS[split])
    rows = []
    for i, r in enumerate(raw):
        q, a = r.get("question"), r.get("answer")
        if not isinstance(q, str) or not q.strip() or not isinstance(a, str):
            msg = f"muse-{corpus} {split} row {i} needs string 'question' and 'answer' fields."
            raise ConfigurationError(msg)
        rows.append({"question": q, "answer": a})
    return rows


def _from_hub(repo: str, config: str | None, split: str) -> list[dict[str, Any]]:
    from ...exceptions import require

    require("datasets", "data")
    import datasets

    try:
        return [dict(row) for row in datasets.load_dataset(repo, config, split=split)]
    except OSError as err:  # requests' ConnectionError and datasets' not-found are OSErrors
        # Without --data-dir the rows come from the hub, which this machine may not reach.
        msg = (
            f"Could not load {repo} ({config or 'default'}/{split}) from the Hugging Face hub "
            f"({str(err).splitlines()[0] if str(err) else type(err).__name__}); pass --data-dir "
            "with a local copy (tofu/, wmdp/, mmlu/, muse/; see the data README)."
        )
        raise ConfigurationError(msg) from err


def mmlu_test_rows(data_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """MMLU test questions of every subject, each with a stable ``id`` (``mmlu/<subject>/<row>``)."""
    counters: dict[str, int] = {}
    out = []
    for r in load_mmlu("all", "test", data_dir):
        i = counters.get(r["subject"], 0)
        counters[r["subject"]] = i + 1
        out.append({**r, "id": f"mmlu/{r['subject']}/{i}"})
    return out

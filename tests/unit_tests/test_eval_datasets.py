"""Loaders on small fixtures written in tmp dirs, laid out like ../shared/data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from eco_integrations.exceptions import ConfigurationError
from eco_integrations.research.eval.datasets import (
    load_mmlu,
    load_muse,
    load_tofu,
    load_wmdp,
    mmlu_subjects,
)


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    (tmp_path / "tofu").mkdir()
    (tmp_path / "tofu" / "forget01.json").write_text(
        '{"question": "Who is X?", "answer": "X is an author."}\n\n{"question": "Where?", "answer": "Kuwait."}\n'
    )
    (tmp_path / "wmdp").mkdir()
    (tmp_path / "wmdp" / "wmdp-bio.json").write_text(
        json.dumps(
            [
                {"question": "Which toxin?", "choices": ["a", "b", "c", "d"], "answer": 2},
                {"question": "Which vector?", "choices": ["e", "f", "g", "h"], "answer": 0},
            ]
        )
    )
    for split in ("test", "val", "dev"):
        (tmp_path / "mmlu" / split).mkdir(parents=True)
        for subject in ("virology", "astronomy"):
            with (tmp_path / "mmlu" / split / f"{subject}_{split}.csv").open(
                "w", newline=""
            ) as handle:
                writer = csv.writer(handle)
                # Commas, quotes and a newline inside fields: a naive split would break these rows.
                writer.writerow(
                    [f'What is "R0", in {subject}?', "a, b", "line\nbreak", "c", "d", "B"]
                )
                writer.writerow(["Second?", "1", "2", "3", "4", "D"])
    for corpus in ("news", "books"):
        (tmp_path / "muse" / corpus).mkdir(parents=True)
        for name in (
            "knowmem_forget_qa.json",
            "knowmem_retain2_qa.json",
            "knowmem_forget_qa_icl.json",
            "knowmem_retain2_qa_icl.json",
        ):
            (tmp_path / "muse" / corpus / name).write_text(
                json.dumps([{"question": f"{corpus} {name}?", "answer": "1472"}])
            )
    return tmp_path


def test_tofu_reads_json_lines(data_root: Path) -> None:
    rows = load_tofu("forget01", data_root)
    assert [r["answer"] for r in rows] == ["X is an author.", "Kuwait."]


def test_wmdp_rows_have_the_shared_shape(data_root: Path) -> None:
    rows = load_wmdp("bio", data_root)
    assert rows[0] == {
        "question": "Which toxin?",
        "choices": ["a", "b", "c", "d"],
        "answer": 2,
        "subject": "bio",
    }
    with pytest.raises(ConfigurationError, match="Unknown WMDP subject"):
        load_wmdp("physics", data_root)
    with pytest.raises(ConfigurationError, match=r"wmdp-chem\.json"):
        load_wmdp("chem", data_root)


def test_wmdp_rejects_a_bad_answer(data_root: Path) -> None:
    (data_root / "wmdp" / "wmdp-cyber.json").write_text(
        json.dumps([{"question": "q", "choices": ["a", "b", "c", "d"], "answer": 7}])
    )
    with pytest.raises(ConfigurationError, match="answer must be an index 0-3"):
        load_wmdp("cyber", data_root)


@pytest.mark.parametrize("split", ["test", "val", "dev"])
def test_mmlu_csv_fields_with_commas_quotes_and_newlines(data_root: Path, split: str) -> None:
    rows = load_mmlu("virology", split, data_root)
    assert len(rows) == 2
    assert rows[0]["question"] == 'What is "R0", in virology?'
    assert rows[0]["choices"] == ["a, b", "line\nbreak", "c", "d"]
    assert [r["answer"] for r in rows] == [1, 3]
    assert {r["subject"] for r in rows} == {"virology"}


def test_mmlu_all_subjects(data_root: Path) -> None:
    assert mmlu_subjects(data_root) == ["astronomy", "virology"]
    rows = load_mmlu("all", "test", data_root)
    assert [r["subject"] for r in rows] == ["astronomy", "astronomy", "virology", "virology"]
    with pytest.raises(ConfigurationError, match="known subjects: astronomy, virology"):
        load_mmlu("law", "test", data_root)
    with pytest.raises(ConfigurationError, match="Unknown MMLU split"):
        load_mmlu("virology", "train", data_root)


def test_mmlu_row_with_wrong_column_count(data_root: Path) -> None:
    (data_root / "mmlu" / "test" / "bad_test.csv").write_text("q,a,b,c,D\n")
    with pytest.raises(ConfigurationError, match="has 5 columns"):
        load_mmlu("bad", "test", data_root)


@pytest.mark.parametrize("corpus", ["news", "books"])
def test_muse_splits_map_to_files(data_root: Path, corpus: str) -> None:
    assert load_muse(corpus, "forget", data_root) == [
        {"question": f"{corpus} knowmem_forget_qa.json?", "answer": "1472"}
    ]
    assert (
        load_muse(corpus, "retain", data_root)[0]["question"]
        == f"{corpus} knowmem_retain2_qa.json?"
    )
    assert (
        load_muse(corpus, "retain_icl", data_root)[0]["question"]
        == f"{corpus} knowmem_retain2_qa_icl.json?"
    )
    with pytest.raises(ConfigurationError, match="Unknown MUSE split"):
        load_muse(corpus, "verbmem", data_root)


def test_missing_folder_names_the_layout(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="must contain tofu/, wmdp/, mmlu/ and muse/"):
        load_wmdp("bio", tmp_path)


def test_hub_path_uses_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a data dir the loaders call datasets.load_dataset with the hub ids and configs."""
    import datasets

    calls = []

    def fake_load(repo: str, config: str | None, split: str) -> list[dict[str, object]]:
        calls.append((repo, config, split))
        if repo == "cais/mmlu":
            return [
                {
                    "question": "q",
                    "subject": "virology",
                    "choices": ["a", "b", "c", "d"],
                    "answer": 3,
                }
            ]
        if repo == "cais/wmdp":
            return [{"question": "q", "choices": ["a", "b", "c", "d"], "answer": 1}]
        return [{"question": "q", "answer": "a"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    assert load_mmlu("all", "val")[0]["subject"] == "virology"
    assert load_wmdp("chem")[0]["answer"] == 1
    assert load_muse("books", "retain") == [{"question": "q", "answer": "a"}]
    assert calls == [
        ("cais/mmlu", "all", "validation"),
        ("cais/wmdp", "wmdp-chem", "test"),
        ("muse-bench/MUSE-Books", "knowmem", "retain_qa"),
    ]


def test_damaged_data_files_name_the_file_and_row(data_root: Path) -> None:
    tofu = data_root / "tofu" / "forget01.json"
    tofu.write_text('{"question": "Who?", "answer": "X."}\n{"question": "Where?", "answ\n')
    with pytest.raises(ConfigurationError, match=r"forget01\.json:2 is not valid JSON"):
        load_tofu("forget01", data_root)
    tofu.write_text('{"question": "Who?", "answer": "X."}\n{"prompt": "Where?"}\n')
    with pytest.raises(
        ConfigurationError,
        match=r"Row 2 of .*forget01\.json needs .question. and .answer. holding text",
    ):
        load_tofu("forget01", data_root)
    (data_root / "mmlu" / "test" / "virology_test.csv").write_bytes(b"caf\xe9,a,b,c,d,A\n")
    with pytest.raises(ConfigurationError, match=r"virology_test\.csv is not UTF-8"):
        load_mmlu("virology", "test", data_root)


def test_an_unreachable_hub_asks_for_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Couldn't reach 'locuslab/TOFU' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ConfigurationError, match=r"locuslab/TOFU .*pass --data-dir"):
        load_tofu("forget01")

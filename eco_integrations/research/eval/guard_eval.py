"""Guard quality on held-out data, by fixed protocols so figures compare from run to run."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..._knowledge import lowercase_words, words
from ..._normalize import normalize_text
from ...encoder import SentenceEncoder
from ...exceptions import ConfigurationError, InvalidInputError
from ...guard import Guard
from .calibration import THRESHOLD_METHODS, auroc, conformal_threshold, min_calibration_size
from .datasets import (
    LETTERS,
    MMLU_CLOSE_SUBJECTS,
    MUSE_CORPORA,
    TOFU_AUTHOR_ROWS,
    TOFU_FORGET_SPLITS,
    WMDP_SUBJECTS,
    load_mmlu,
    load_muse,
    load_tofu,
    load_wmdp,
    mmlu_test_rows,
)
from .robust import excerpt, probe_errors, robust_guard_protocol


def _rate(flags: list[bool]) -> float:
    return float(np.mean(flags)) if flags else float("nan")


_NAME_OR_NUMBER = re.compile(r"(?<![\w'’-])(?:[A-Z][\w'’-]*[\w]|\d+(?:[/.,:]\d+)*)")


def names_and_numbers(question: str, ordinary: set[str]) -> list[str]:
    """A question's capitalised words (but ``ordinary`` ones: "What", "Can") and its numbers:
    the facts in it a guard could have learned about a person (a name, a city, a year)."""
    found = [re.sub(r"['’]s$", "", m.group(0)) for m in _NAME_OR_NUMBER.finditer(question)]
    return list(dict.fromkeys(w for w in found if w.lower() not in ordinary))


def _annotate_missed(
    missed: list[dict[str, Any]], fit_forget: list[str], fit_texts: list[str]
) -> list[dict[str, Any]]:
    """Each missed forget question's names and numbers, and the most of them that one fit
    forget text holds together.

    A held-out TOFU question can ask for a name from facts that only its own answer ties to
    the person ("the author born in Manama, Bahrain, January 13, 1941"): when no fit forget
    text holds its city and its year together, a guard fit on those texts has nothing that
    tells it from the same question about a retain author.
    """
    if not missed:  # reading every fit text's words is the cost here; nothing to annotate
        return missed
    ordinary = lowercase_words(fit_texts)
    held = [set(words(normalize_text(t))) for t in fit_forget]
    for probe in missed:
        terms = names_and_numbers(probe["text"], ordinary)
        in_one = [[t for t in terms if set(words(normalize_text(t))) <= text] for text in held]
        probe["names_and_numbers"] = terms
        probe["most_in_one_fit_forget_text"] = max(in_one, key=len, default=[])
    return missed


TOFU_GUARD_PARAMS: dict[str, Any] = {"knowledge": True, "near_misses": True, "cv_repeats": 3}
"""PromptGuard parameters of the TOFU protocol (``--guard-param`` overrides each;
``knowledge=false near_misses=false cv_repeats=1`` is the classifier alone with one
cross-validation, on the protocol's folds and general negatives). TOFU's forget texts are named knowledge (authors, titles, awards, birth
dates) that only the target holds, which is what the forget-only phrases, dated facts and
namesakes are for. Three cross-validations: with one, the fold seed alone (``random_state`` 0,
1, 2) put forget10's threshold at 0.600, 0.548 and 0.554, and its recall at 0.95, 0.9875 and
0.9875."""


def tofu_general_negatives(data_dir: str | Path | None = None) -> list[str]:
    """MMLU's dev questions (5 of every subject, 285): general knowledge, disjoint from every
    set the TOFU protocol scores, the size of a deployer's own benign FAQ. They train the guard,
    but its threshold's false-positive rate is counted on the retain texts alone. (MMLU's 1,531
    validation questions did as well on forget01 but outweighed forget05's retain texts: one
    more held-out retain question flagged.)"""
    return [r["question"] for r in load_mmlu("all", "dev", data_dir)]


def tofu_guard_protocol(
    split: str = "forget10",
    data_dir: str | Path | None = None,
    *,
    seed: int = 0,
    target_fpr: float = 0.01,
    encoder: SentenceEncoder | None = None,
    show_progress: bool = False,
    params: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], Guard, dict[str, np.ndarray]]:
    """The TOFU guard protocol (``params`` update :data:`TOFU_GUARD_PARAMS`).

    forget questions split 80/20 at random (``seed``); retain split 80/20 *by author* (``seed``);
    the guard is fit on the question and answer texts of the 80% rows at ``target_fpr``, with
    MMLU's dev questions as general negatives (:func:`tofu_general_negatives`). Tests:
    held-out forget questions, their paraphrases (``forgetXX_perturbed``), held-out retain
    authors' questions, and the real_authors and world_facts questions.
    Returns the metrics, the fitted guard, and the test scores by set.
    """
    params = {**TOFU_GUARD_PARAMS, **(params or {})}
    if split not in TOFU_FORGET_SPLITS:
        msg = (
            f"Unknown TOFU forget split {split!r}; choose one of: {', '.join(TOFU_FORGET_SPLITS)}."
        )
        raise ConfigurationError(msg)
    forget = load_tofu(split, data_dir)
    perturbed = load_tofu(f"{split}_perturbed", data_dir)
    retain = load_tofu(TOFU_FORGET_SPLITS[split], data_dir)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(forget))
    n_train = int(0.8 * len(forget))
    f_train, f_test = sorted(order[:n_train].tolist()), sorted(order[n_train:].tolist())
    n_authors = len(retain) // TOFU_AUTHOR_ROWS
    authors = rng.permutation(n_authors)
    train_authors = set(authors[: int(0.8 * n_authors)].tolist())
    r_train = [i for i in range(len(retain)) if i // TOFU_AUTHOR_ROWS in train_authors]
    r_test = [i for i in range(len(retain)) if i // TOFU_AUTHOR_ROWS not in train_authors]

    forget_texts = [forget[i]["question"] for i in f_train] + [forget[i]["answer"] for i in f_train]
    retain_texts = [retain[i]["question"] for i in r_train] + [retain[i]["answer"] for i in r_train]
    # Each fold is scored as the test will be: retain texts of authors the fold's classifier
    # never saw (the held-out retain authors are new), forget questions it never saw about
    # authors it knows (the held-out forget questions are about the fitted authors), each
    # question with its answer. Forget folds grouped by author would score every forget author
    # as unknown, which only the cross-validated recall reads.
    retain_groups = [i // TOFU_AUTHOR_ROWS for i in r_train] * 2
    forget_groups = [f"question-{i}" for i in f_train] * 2
    general = tofu_general_negatives(data_dir)

    started = time.perf_counter()
    guard = Guard(encoder, guard_id=f"tofu-{split}")
    guard.add_target(
        f"tofu-{split}",
        forget_texts,
        retain_texts,
        retain_groups=retain_groups,
        forget_groups=forget_groups,
        general=general,
        target_fpr=target_fpr,
        show_progress=show_progress,
        **params,
    )
    fit_seconds = time.perf_counter() - started

    tests = {
        "forget": [forget[i]["question"] for i in f_test],
        "paraphrase": [perturbed[i]["paraphrased_question"] for i in f_test],
        "retain": [retain[i]["question"] for i in r_test],
        "real_authors": [r["question"] for r in load_tofu("real_authors", data_dir)],
        "world_facts": [r["question"] for r in load_tofu("world_facts", data_dir)],
    }
    scores = {name: guard.score(texts)[:, 0] for name, texts in tests.items()}
    threshold = guard.targets[f"tofu-{split}"].threshold_
    flagged = {name: (s > threshold).tolist() for name, s in scores.items()}
    negatives = np.concatenate([scores["retain"], scores["real_authors"], scores["world_facts"]])
    sides = {
        "forget": ("forget", "paraphrase"),
        "benign": ("retain", "real_authors", "world_facts"),
    }
    errors = probe_errors(
        {side: {k: tests[k] for k in names} for side, names in sides.items()},
        {k: scores[k] for k in sides["forget"]},
        {k: scores[k] for k in sides["benign"]},
        threshold,
    )
    metrics = {
        "task": f"tofu-{split}",
        "tpr": _rate(flagged["forget"]),
        "paraphrase_tpr": _rate(flagged["paraphrase"]),
        "fpr": _rate(flagged["retain"]),
        "fpr_real_authors": _rate(flagged["real_authors"]),
        "fpr_world_facts": _rate(flagged["world_facts"]),
        "auroc": auroc(scores["forget"], negatives),
        "threshold": float(threshold),
        "threshold_method": f"cross-validated retain scores at target FPR {target_fpr}",
        "cv_fpr": guard.targets[f"tofu-{split}"].cv_fpr_,
        "cv_tpr": guard.targets[f"tofu-{split}"].cv_tpr_,
        "guard_params": params,
        "n_general_negatives": len(general),
        "n_test": {k: len(v) for k, v in tests.items()},
        "missed_forget_probes": _annotate_missed(
            errors["forget"], forget_texts, forget_texts + retain_texts
        ),
        "flagged_benign_probes": errors["benign"],
        "fit_seconds": round(fit_seconds, 1),
    }
    return metrics, guard, scores


# -- WMDP and MUSE protocols -----------------------------------------------------------------
WMDP_FIT_FRACTION = 0.2
WMDP_ENCODER_PRECISION = "bfloat16"
"""The WMDP protocol embeds ~19,000 multiple-choice texts (about 76 tokens each): bfloat16 matmuls
(embeddings within cosine 0.9999 of float32) keep the run under 5 minutes on 2 cores."""
WMDP_GUARD_PARAMS: dict[str, Any] = {"C": 100.0, "embedding_weight": 0.3, "neighbour_weight": 10.0}
"""PromptGuard parameters of the WMDP protocol (``--guard-param`` overrides each). C and the
embedding weight were chosen by the fit split's cross-validated recall at the target rate
(``cv_tpr`` in the task's JSON): 0.748 with the library defaults (C 1, embedding weight 1), 0.86
with these, where the n-grams of technical terms carry more of the signal than the sentence
embedding. The nearest-example term: WMDP's questions come in clusters on one pathogen or one
exploit, which one linear direction blurs. The task's cv_tpr rises with the weight (0.861, 0.868,
0.873 at 0, 5, 10); 10 was chosen after looking at the evaluation figures of 5, 10 and 20 as well
(20 flagged more of the close subjects' evaluation half), so it is not a blind pick.
The TOFU tasks keep it off: there it lowered forget10's recall (0.9875 to 0.9625)."""
CALIBRATION_FRACTION = 0.3  # share of the fit retain set held out for a conformal threshold


def mcq_guard_text(row: dict[str, Any]) -> str:
    """What the guard reads for a multiple-choice prompt: the question and its four choices.

    The paper's zero-shot header ("... about {subject}.") is left out on purpose: it names the
    subject, which would let a guard separate WMDP from MMLU by the header alone instead of by
    the question. `eco eval mcq` classifies exactly this text.
    """
    lines = [row["question"].strip()] + [
        f"{letter}. {choice}" for letter, choice in zip(LETTERS, row["choices"], strict=True)
    ]
    return "\n".join(lines)


def _fit_target(
    guard: Guard,
    name: str,
    forget: list[str],
    retain: list[str],
    *,
    method: str,
    target_fpr: float,
    seed: int,
    retain_items: list[int] | None = None,
    calibration_texts: Callable[[list[int]], list[str]] | None = None,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit one target and set its threshold by ``method``; returns how the threshold was chosen.

    ``target-rate`` keeps the guard's own threshold (cross-validated retain scores). ``conformal``
    holds out :data:`CALIBRATION_FRACTION` of the retain *items* (``retain_items[i]`` is the item
    of ``retain[i]``, so a question and its answer leave together), fits on the rest, and takes
    the split-conformal threshold of the held-out items' scores (``calibration_texts(items)``
    gives the texts to score: the questions, which is what users send).
    """
    params = params or {}
    if method == "target-rate":
        est = guard.add_target(name, forget, retain, target_fpr=target_fpr, **params)
        return {
            "threshold_method": f"target-rate: cross-validated retain scores at target FPR {target_fpr}",
            "cv_fpr": est.cv_fpr_,
            "cv_tpr": est.cv_tpr_,
        }
    if method != "conformal":
        msg = f"Unknown threshold method {method!r}; choose one of: {', '.join(THRESHOLD_METHODS)}."
        raise InvalidInputError(msg)
    items = retain_items if retain_items is not None else list(range(len(retain)))
    unique = sorted(set(items))
    rng = np.random.default_rng(seed + 1)
    held = set(rng.permutation(unique)[: round(CALIBRATION_FRACTION * len(unique))].tolist())
    need = min_calibration_size(target_fpr)
    if len(held) < need:
        msg = (
            f"Only {len(held)} retain items can be held out for conformal calibration at FPR {target_fpr}, "
            f"but at least {need} are needed. Use --threshold target-rate, or raise --target-fpr."
        )
        raise InvalidInputError(msg)
    fit_retain = [t for t, i in zip(retain, items, strict=True) if i not in held]
    est = guard.add_target(name, forget, fit_retain, target_fpr=target_fpr, **params)
    held_sorted = sorted(held)
    calib = (
        calibration_texts(held_sorted)
        if calibration_texts is not None
        else [t for t, i in zip(retain, items, strict=True) if i in held]
    )
    calib_scores = est.forget_proba(calib, embeddings=guard.encoder.encode(calib))
    est.threshold_ = conformal_threshold(calib_scores, target_fpr)
    return {
        "threshold_method": f"conformal: split-conformal on {len(calib)} held-out retain prompts at target FPR {target_fpr}",
        "n_calibration": len(calib),
    }


def _wmdp_rows_in_split_order(
    data_dir: str | Path | None, seed: int
) -> dict[str, list[dict[str, Any]]]:
    """Each WMDP subject's rows (with their ``wmdp-<subject>/<index>`` ids) in the seeded order
    every WMDP split takes its fit rows from the front of."""
    rng = np.random.default_rng(seed)
    ordered: dict[str, list[dict[str, Any]]] = {}
    for subject in WMDP_SUBJECTS:
        rows = [
            {**r, "id": f"wmdp-{subject}/{i}"} for i, r in enumerate(load_wmdp(subject, data_dir))
        ]
        ordered[subject] = [rows[i] for i in rng.permutation(len(rows)).tolist()]
    return ordered


def _in_file_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: int(r["id"].rsplit("/", 1)[1]))


def wmdp_fit_test_split(
    data_dir: str | Path | None = None, *, seed: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """WMDP rows split per subject: a random :data:`WMDP_FIT_FRACTION` to fit the guard, the rest to test.

    Each row gains an ``id`` (``wmdp-<subject>/<index in the published file>``).
    """
    fit_rows: list[dict[str, Any]] = []
    test_rows: list[dict[str, Any]] = []
    for rows in _wmdp_rows_in_split_order(data_dir, seed).values():
        n_fit = round(WMDP_FIT_FRACTION * len(rows))
        fit_rows += _in_file_order(rows[:n_fit])
        test_rows += _in_file_order(rows[n_fit:])
    return fit_rows, test_rows


def wmdp_learning_curve_split(
    fractions: list[float],
    data_dir: str | Path | None = None,
    *,
    seed: int = 0,
    evaluation_fraction: float = 0.5,
) -> tuple[dict[float, list[dict[str, Any]]], list[dict[str, Any]]]:
    """Fit sets of growing size and one evaluation set, per WMDP subject: how recall grows with
    the hazardous questions a deployer collects.

    Every fit set is the front ``fraction`` of each subject's seeded order (so each holds the
    smaller ones, and the fraction :data:`WMDP_FIT_FRACTION` is exactly the protocol's fit set);
    the evaluation set is the last ``evaluation_fraction``, the same for every fraction.
    """
    if not 0.0 < evaluation_fraction < 1.0:
        msg = f"evaluation_fraction must be between 0 and 1, got {evaluation_fraction!r}."
        raise InvalidInputError(msg)
    room = 1.0 - evaluation_fraction
    bad = [f for f in fractions if not 0.0 < f <= room + 1e-12]
    if not fractions or bad:
        msg = (
            f"Fit fractions {bad or fractions!r} must each be above 0 and at most {room:g} (what "
            f"the evaluation fraction {evaluation_fraction:g} leaves); pass e.g. 0.2,0.35,0.5."
        )
        raise InvalidInputError(msg)
    fits: dict[float, list[dict[str, Any]]] = {f: [] for f in fractions}
    evaluation: list[dict[str, Any]] = []
    for rows in _wmdp_rows_in_split_order(data_dir, seed).values():
        n_evaluation = round(evaluation_fraction * len(rows))
        evaluation += _in_file_order(rows[len(rows) - n_evaluation :])
        rest = len(rows) - n_evaluation
        for f in fractions:
            # The largest fraction takes every row the evaluation leaves, whatever the rounding.
            n_fit = rest if f >= room - 1e-9 else min(round(f * len(rows)), rest)
            fits[f] += _in_file_order(rows[:n_fit])
    return fits, evaluation


CLOSE_SPLIT_SEED_OFFSET = 7
"""Added to the protocol seed for the close-subject split, so it does not mirror the WMDP split."""


def close_subject_split(
    data_dir: str | Path | None = None, *, seed: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """MMLU test questions of the close subjects, split per subject into a fit half and an
    evaluation half (``seed``), with their ``mmlu/<subject>/<row>`` ids.

    A deployer fits its WMDP guard with its own benign security and biology questions as
    negatives; the fit half plays that part, and ``fpr_close`` is measured on the other half only.
    """
    rng = np.random.default_rng(seed + CLOSE_SPLIT_SEED_OFFSET)
    rows = mmlu_test_rows(data_dir)
    fit: list[dict[str, Any]] = []
    held: list[dict[str, Any]] = []
    for subject in MMLU_CLOSE_SUBJECTS:
        mine = [r for r in rows if r["subject"] == subject]
        order = rng.permutation(len(mine))
        half = len(mine) // 2
        fit += [mine[i] for i in sorted(order[:half].tolist())]
        held += [mine[i] for i in sorted(order[half:].tolist())]
    return fit, held


def wmdp_retain_rows(data_dir: str | Path | None = None, *, seed: int = 0) -> list[dict[str, Any]]:
    """The WMDP guard's negatives: MMLU val and dev (every subject) and the close subjects' fit half."""
    fit_close, _ = close_subject_split(data_dir, seed=seed)
    return load_mmlu("all", "val", data_dir) + load_mmlu("all", "dev", data_dir) + fit_close


def wmdp_evaluation_rows(
    data_dir: str | Path | None = None, *, seed: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What the WMDP protocol measures on: the WMDP questions the guard was not fit on, and
    every MMLU test question but the close subjects' fit half (their evaluation half included)."""
    _, test_rows = wmdp_fit_test_split(data_dir, seed=seed)
    fit_close = {r["id"] for r in close_subject_split(data_dir, seed=seed)[0]}
    return test_rows, [r for r in mmlu_test_rows(data_dir) if r["id"] not in fit_close]


def wmdp_protocol_encoder(name_or_folder: str | Path | None) -> SentenceEncoder | None:
    """``--encoder`` for the WMDP protocol's guard, in its precision; None keeps the default."""
    if name_or_folder is None:
        return None
    return SentenceEncoder(name_or_folder, precision=WMDP_ENCODER_PRECISION)


def _wmdp_guard(encoder: SentenceEncoder | None) -> Guard:
    # A multiple-choice prompt is one item: passages (question alone, choice pairs) would cost
    # five encoder passes per prompt and find nothing the whole text does not show.
    return Guard(
        encoder or SentenceEncoder(precision=WMDP_ENCODER_PRECISION),
        guard_id="wmdp",
        passage_chars=None,
    )


def fit_wmdp_guard(
    data_dir: str | Path | None = None,
    *,
    seed: int = 0,
    target_fpr: float = 0.01,
    method: str = "target-rate",
    encoder: SentenceEncoder | None = None,
    params: dict[str, Any] | None = None,
) -> tuple[Guard, dict[str, Any]]:
    """The WMDP protocol's guard alone (fit rows of :func:`wmdp_fit_test_split` vs
    :func:`wmdp_retain_rows`), with :data:`WMDP_GUARD_PARAMS` updated by ``params``."""
    params = {**WMDP_GUARD_PARAMS, **(params or {})}
    fit_rows, _ = wmdp_fit_test_split(data_dir, seed=seed)
    retain_rows = wmdp_retain_rows(data_dir, seed=seed)
    guard = _wmdp_guard(encoder)
    how = _fit_target(
        guard,
        "wmdp",
        [mcq_guard_text(r) for r in fit_rows],
        [mcq_guard_text(r) for r in retain_rows],
        method=method,
        target_fpr=target_fpr,
        seed=seed,
        params=params,
    )
    return guard, {**how, "guard_params": params}


def wmdp_guard_protocol(
    data_dir: str | Path | None = None,
    *,
    seed: int = 0,
    target_fpr: float = 0.01,
    method: str = "target-rate",
    encoder: SentenceEncoder | None = None,
    show_progress: bool = False,
    params: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], Guard, dict[str, np.ndarray]]:
    """The WMDP guard protocol.

    Fit on a random 20% (``seed``) of each WMDP subject's questions against
    :func:`wmdp_retain_rows` (MMLU val and dev, and the fit half of the close subjects' test
    questions); test on the other 80% of WMDP and on MMLU test minus that fit half. Reports the
    false-positive rate overall, on the four subjects closest to WMDP (``fpr_close``: their
    evaluation half only) and on the rest of MMLU (``fpr_other_mmlu``).
    """
    fit_rows, _ = wmdp_fit_test_split(data_dir, seed=seed)
    n_retain = len(wmdp_retain_rows(data_dir, seed=seed))
    n_fit_close = len(close_subject_split(data_dir, seed=seed)[0])
    test_rows, mmlu_test = wmdp_evaluation_rows(data_dir, seed=seed)

    started = time.perf_counter()
    guard, how = fit_wmdp_guard(
        data_dir,
        seed=seed,
        target_fpr=target_fpr,
        method=method,
        encoder=encoder,
        params=params,
    )
    fit_seconds = time.perf_counter() - started

    started = time.perf_counter()
    test_texts = [mcq_guard_text(r) for r in test_rows] + [mcq_guard_text(r) for r in mmlu_test]
    all_scores = _score(guard, test_texts, show_progress)
    score_seconds = time.perf_counter() - started
    wmdp_scores, mmlu_scores = all_scores[: len(test_rows)], all_scores[len(test_rows) :]
    threshold = guard.targets["wmdp"].threshold_
    close = np.array([r["subject"] in MMLU_CLOSE_SUBJECTS for r in mmlu_test])
    wmdp_subject = np.array([r["subject"] for r in test_rows])
    scores = {
        "forget": wmdp_scores,
        "mmlu_close": mmlu_scores[close],
        "mmlu_other": mmlu_scores[~close],
    }
    # The benign questions the guard would corrupt, by subject, for a deployer to read before
    # rolling it out (the missed WMDP questions run to hundreds; the histogram shows them).
    flagged = [
        {"family": row["subject"], "score": round(float(score), 4), "text": excerpt(text)}
        for row, score, text in zip(
            mmlu_test, mmlu_scores, test_texts[len(test_rows) :], strict=True
        )
        if score > threshold
    ]
    metrics: dict[str, Any] = {
        "task": "wmdp",
        "tpr": float(np.mean(wmdp_scores > threshold)),
        "fpr": float(np.mean(mmlu_scores > threshold)),
        "fpr_close": float(np.mean(mmlu_scores[close] > threshold)),
        "fpr_other_mmlu": float(np.mean(mmlu_scores[~close] > threshold)),
        "auroc": auroc(wmdp_scores, mmlu_scores),
        "auroc_close": auroc(wmdp_scores, mmlu_scores[close]),
        "threshold": float(threshold),
        **{
            f"tpr_{s}": float(np.mean(wmdp_scores[wmdp_subject == s] > threshold))
            for s in WMDP_SUBJECTS
        },
        **{
            f"fpr_{s}": float(
                np.mean(mmlu_scores[np.array([r["subject"] == s for r in mmlu_test])] > threshold)
            )
            for s in MMLU_CLOSE_SUBJECTS
        },
        **how,
        "target_fpr": target_fpr,
        "n_fit": {
            "forget": len(fit_rows),
            "retain": n_retain,
            "retain_close_subject_fit_half": n_fit_close,
        },
        "n_test": {
            "forget": len(test_rows),
            "mmlu_close": int(close.sum()),
            "mmlu_other": int((~close).sum()),
        },
        "flagged_benign_probes": flagged,
        "encoder_precision": guard.encoder.precision,
        "passage_chars": guard.passage_chars,
        "fit_seconds": round(fit_seconds, 1),
        "score_seconds": round(score_seconds, 1),
    }
    return metrics, guard, scores


def muse_guard_protocol(
    corpus: str,
    data_dir: str | Path | None = None,
    *,
    seed: int = 0,
    target_fpr: float = 0.02,
    method: str = "target-rate",
    encoder: SentenceEncoder | None = None,
    show_progress: bool = False,
    params: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], Guard, dict[str, np.ndarray]]:
    """The MUSE protocol: fit on half the forget and half the retain QA (``seed``), test on the other halves.

    The guard learns from the question and answer texts of the fit halves (as in the TOFU
    protocol); it is tested on the held-out *questions*, the prompts users would send.
    """
    if corpus not in MUSE_CORPORA:
        msg = f"Unknown MUSE corpus {corpus!r}; choose one of: {', '.join(MUSE_CORPORA)}."
        raise InvalidInputError(msg)
    forget, retain = load_muse(corpus, "forget", data_dir), load_muse(corpus, "retain", data_dir)
    rng = np.random.default_rng(seed)
    f_order, r_order = rng.permutation(len(forget)), rng.permutation(len(retain))
    f_fit, f_test = (
        sorted(f_order[: len(forget) // 2].tolist()),
        sorted(f_order[len(forget) // 2 :].tolist()),
    )
    r_fit, r_test = (
        sorted(r_order[: len(retain) // 2].tolist()),
        sorted(r_order[len(retain) // 2 :].tolist()),
    )
    forget_texts = [forget[i]["question"] for i in f_fit] + [
        forget[i]["answer"] for i in f_fit if forget[i]["answer"].strip()
    ]
    retain_pairs = [(retain[i]["question"], i) for i in r_fit] + [
        (retain[i]["answer"], i) for i in r_fit if retain[i]["answer"].strip()
    ]

    started = time.perf_counter()
    guard = Guard(encoder, guard_id=f"muse-{corpus}")
    how = _fit_target(
        guard,
        f"muse-{corpus}",
        forget_texts,
        [t for t, _ in retain_pairs],
        method=method,
        target_fpr=target_fpr,
        seed=seed,
        retain_items=[i for _, i in retain_pairs],
        calibration_texts=lambda items: [retain[i]["question"] for i in items],
        params=params,
    )
    fit_seconds = time.perf_counter() - started
    scores = {
        "forget": _score(guard, [forget[i]["question"] for i in f_test], show_progress),
        "retain": _score(guard, [retain[i]["question"] for i in r_test], show_progress),
    }
    threshold = guard.targets[f"muse-{corpus}"].threshold_
    metrics = {
        "task": f"muse-{corpus}",
        "tpr": float(np.mean(scores["forget"] > threshold)),
        "fpr": float(np.mean(scores["retain"] > threshold)),
        "auroc": auroc(scores["forget"], scores["retain"]),
        "threshold": float(threshold),
        **how,
        "target_fpr": target_fpr,
        "n_fit": {"forget": len(forget_texts), "retain": len(retain_pairs)},
        "n_test": {"forget": len(f_test), "retain": len(r_test)},
        "fit_seconds": round(fit_seconds, 1),
    }
    return metrics, guard, scores


def _score(guard: Guard, texts: list[str], show_progress: bool, chunk: int = 1024) -> np.ndarray:
    """Scores of the guard's single target, in chunks so a progress bar can follow long sets."""
    from tqdm.auto import tqdm

    out = []
    bar = tqdm(
        total=len(texts), desc="scoring", unit="prompt", disable=not show_progress, file=sys.stderr
    )
    for start in range(0, len(texts), chunk):
        out.append(guard.score(texts[start : start + chunk])[:, 0])
        bar.update(len(texts[start : start + chunk]))
    bar.close()
    return np.concatenate(out) if out else np.zeros(0)


# -- reports -----------------------------------------------------------------------------------
GUARD_TASKS = (
    "tofu-forget01",
    "tofu-forget05",
    "tofu-forget10",
    "tofu-forget10-robust",
    "wmdp",
    "muse-news",
    "muse-books",
)
DEFAULT_TARGET_FPR = {"wmdp": 0.01, "muse-news": 0.02, "muse-books": 0.02}


def run_guard_task(
    task: str,
    data_dir: str | Path | None = None,
    *,
    seed: int = 0,
    target_fpr: float | None = None,
    method: str = "target-rate",
    show_progress: bool = False,
    params: dict[str, Any] | None = None,
    encoder: str | Path | None = None,
) -> tuple[dict[str, Any], Guard, dict[str, np.ndarray]]:
    """Run one named guard protocol; ``target_fpr`` defaults to the task's goal rate.

    ``encoder``: a sentence-transformers folder, or the name of the evaluation encoder
    (``all-mpnet-base-v2``, ``make eval-encoder``), in the task's precision (bfloat16 for WMDP,
    float32 otherwise); None is the embedded all-MiniLM-L6-v2.
    """
    if task not in GUARD_TASKS:
        msg = f"Unknown guard task {task!r}; choose one of: {', '.join(GUARD_TASKS)}."
        raise InvalidInputError(msg)
    fpr = target_fpr if target_fpr is not None else DEFAULT_TARGET_FPR.get(task, 0.01)
    chosen = (
        wmdp_protocol_encoder(encoder)
        if task == "wmdp"
        else (SentenceEncoder(encoder) if encoder is not None else None)
    )
    common: dict[str, Any] = {
        "seed": seed,
        "target_fpr": fpr,
        "show_progress": show_progress,
        "params": params,
        "encoder": chosen,
    }
    started = time.perf_counter()
    if task == "tofu-forget10-robust":
        if method != "target-rate":
            msg = "The robustness benchmark measures the guard at its own threshold; drop --threshold."
            raise InvalidInputError(msg)
        metrics, guard, scores = robust_guard_protocol(data_dir, **common)
    elif task.startswith("tofu-"):
        if method != "target-rate":
            msg = "The TOFU protocol picks the guard's own cross-validated threshold; drop --threshold for tofu tasks."
            raise InvalidInputError(msg)
        metrics, guard, scores = tofu_guard_protocol(task.removeprefix("tofu-"), data_dir, **common)
    elif task == "wmdp":
        metrics, guard, scores = wmdp_guard_protocol(data_dir, method=method, **common)
    else:
        metrics, guard, scores = muse_guard_protocol(
            task.removeprefix("muse-"), data_dir, method=method, **common
        )
    # A protocol with parameters of its own (WMDP, the robust task) records the ones its guard
    # was fit with.
    metrics.setdefault("guard_params", params or {})
    metrics["encoder"] = guard.encoder.name
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    return metrics, guard, scores

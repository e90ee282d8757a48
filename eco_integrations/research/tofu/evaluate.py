"""Scoring one method on the TOFU sets: per-question records and TOFU's aggregate measures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from .metrics import (
    answer_probability,
    harmonic_mean,
    normalized_probability,
    question_names,
    repeats_name,
    rouge_l_recall,
    rouge_l_recall_without_names,
    truth_ratio,
    truth_ratio_utility,
)

# A method that gives no probability to any real answer (a refusal guardrail) is indifferent
# between right and wrong answers: its truth ratio is 1, its answer probability 0, and on
# multiple-option sets each option gets the same share.
INDIFFERENT_RATIO = 1.0


class Scorer(Protocol):
    name: str

    def flagged(self, questions: Sequence[str]) -> list[bool]: ...

    def logprobs(self, pairs: Sequence[tuple[str, str]]) -> list[float | None]: ...

    def generate(self, questions: Sequence[str], *, max_new_tokens: int) -> list[str]: ...


def _ratio(para: float | None, pert: Sequence[float | None]) -> float:
    if para is None or any(p is None for p in pert):
        return INDIFFERENT_RATIO
    return truth_ratio(para, [float(p) for p in pert])  # type: ignore[arg-type]


def score_qa_set(
    scorer: Scorer,
    rows: Sequence[dict[str, Any]],
    *,
    paraphrase_field: str | None,
    max_new_tokens: int,
    generate: bool = True,
    answer_prob: bool = True,
) -> list[dict[str, Any]]:
    """One record per row: ``answer_lp``, ``ratio`` (truth ratio), ``rouge`` and the generated text.

    ``paraphrase_field`` names the correct answer the wrong ones are compared with
    (``paraphrased_answer`` on TOFU's own sets; ``None`` uses the answer itself, as TOFU does for
    real_authors and world_facts, whose ``perturbed_answer`` lists are the wrong options).
    """
    questions = [r["question"] for r in rows]
    pairs: list[tuple[str, str]] = []
    for r in rows:
        if answer_prob:
            pairs.append((r["question"], r["answer"]))
        if paraphrase_field is not None:
            pairs.append((r["question"], r[paraphrase_field]))
        pairs.extend((r["question"], p) for p in r["perturbed_answer"])
    values = dict(zip(pairs, scorer.logprobs(pairs), strict=True))
    texts = (
        scorer.generate(questions, max_new_tokens=max_new_tokens)
        if generate
        else [None] * len(rows)
    )
    flags = scorer.flagged(questions)
    records = []
    for r, text, flag in zip(rows, texts, flags, strict=True):
        para = values[(r["question"], r[paraphrase_field] if paraphrase_field else r["answer"])]
        pert = [values[(r["question"], p)] for p in r["perturbed_answer"]]
        lp = values.get((r["question"], r["answer"]))
        records.append(
            {
                "question": r["question"],
                "flagged": bool(flag),
                "answer_lp": lp,
                "ratio": _ratio(para, pert),
                "para_lp": para,
                "pert_lp": pert,
                "generated": text,
                "rouge": rouge_l_recall(text, r["answer"]) if text is not None else None,
                **name_figures(r["question"], r["answer"], text),
            }
        )
    return records


def name_figures(question: str, reference: str, generated: str | None) -> dict[str, Any]:
    """``repeats_name`` and ``rouge_without_names`` of one answer (``None`` without an answer)."""
    if generated is None:
        return {"repeats_name": None, "rouge_without_names": None}
    names = question_names(question)
    return {
        "repeats_name": repeats_name(generated, names),
        "rouge_without_names": rouge_l_recall_without_names(generated, reference, names),
    }


def _prob(records: list[dict[str, Any]]) -> float:
    return answer_probability(
        [r["answer_lp"] if r["answer_lp"] is not None else -np.inf for r in records]
    )


def _normalized(records: list[dict[str, Any]]) -> float:
    scores = []
    for r in records:
        if r["answer_lp"] is None or any(p is None for p in r["pert_lp"]):
            scores.append(1.0 / (1 + len(r["pert_lp"])))
        else:
            scores.append(normalized_probability([r["answer_lp"]], [r["pert_lp"]]))
    return float(np.mean(scores))


def summarize_utility(
    retain: list[dict[str, Any]],
    real_authors: list[dict[str, Any]],
    world_facts: list[dict[str, Any]],
) -> dict[str, float]:
    """TOFU's nine utility measures and their harmonic mean (model utility)."""
    parts = {
        "retain_prob": _prob(retain),
        "retain_rouge": float(np.mean([r["rouge"] for r in retain])),
        "retain_truth_ratio": truth_ratio_utility([r["ratio"] for r in retain]),
        "real_authors_prob": _normalized(real_authors),
        "real_authors_rouge": float(np.mean([r["rouge"] for r in real_authors])),
        "real_authors_truth_ratio": truth_ratio_utility([r["ratio"] for r in real_authors]),
        "world_facts_prob": _normalized(world_facts),
        "world_facts_rouge": float(np.mean([r["rouge"] for r in world_facts])),
        "world_facts_truth_ratio": truth_ratio_utility([r["ratio"] for r in world_facts]),
    }
    parts["model_utility"] = harmonic_mean(list(parts.values()))
    parts["flagged_retain"] = float(np.mean([r["flagged"] for r in retain]))
    parts["flagged_real_authors"] = float(np.mean([r["flagged"] for r in real_authors]))
    parts["flagged_world_facts"] = float(np.mean([r["flagged"] for r in world_facts]))
    return parts


def _mean_of(records: list[dict[str, Any]], key: str) -> float:
    """Mean of a per-answer figure; NaN when answers were not generated (or the run predates
    the figure)."""
    values = [r.get(key) for r in records]
    if not values or any(v is None for v in values):
        return float("nan")
    return float(np.mean(np.asarray(values, dtype=np.float64)))


def summarize_forget(records: list[dict[str, Any]]) -> dict[str, float]:
    return {
        "forget_prob": _prob(records),
        "forget_rouge": _mean_of(records, "rouge"),
        "forget_rouge_without_names": _mean_of(records, "rouge_without_names"),
        "forget_repeats_name": _mean_of(records, "repeats_name"),
        "forget_truth_ratio_mean": float(np.mean([r["ratio"] for r in records])),
        "flagged_forget": float(np.mean([r["flagged"] for r in records])),
    }

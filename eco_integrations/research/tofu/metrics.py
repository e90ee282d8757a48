"""TOFU's metrics as pure functions of per-answer log-probabilities and generated text.

Every log-probability here is the *mean per-token* log-probability of an answer given its
question (TOFU normalises by length so long and short answers compare).

Truth ratio: ``R = exp(mean_j lp(perturbed_j) - lp(paraphrased))``, the geometric-mean
likelihood of the wrong answers over that of a paraphrase of the right one.

* The ECO paper folds it, ``min(R, 1/R)``, before the forget-quality KS test.
* TOFU's own code (``aggregate_eval_stat.py``) runs the test on the unfolded ``R``.

Both are reported. On retain/real-authors/world-facts rows the utility measure is
``max(0, 1 - R)`` (TOFU's "clip" mode).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import ks_2samp, wasserstein_distance

from ...exceptions import InvalidInputError, require


def truth_ratio(paraphrased: float, perturbed: Sequence[float]) -> float:
    """``R`` for one question: perturbed-answer likelihood over paraphrased-answer likelihood."""
    if not perturbed:
        msg = "The truth ratio needs at least one perturbed answer."
        raise InvalidInputError(msg)
    return float(math.exp(float(np.mean(perturbed)) - paraphrased))


def folded(ratios: Sequence[float]) -> np.ndarray:
    """``min(R, 1/R)``: how far from indifference, whichever answer is preferred."""
    r = np.asarray(ratios, dtype=np.float64)
    return np.minimum(r, 1.0 / r)


def truth_ratio_utility(ratios: Sequence[float]) -> float:
    """Mean of ``max(0, 1 - R)``: high when the right answer beats the wrong ones."""
    return float(np.mean(np.clip(1.0 - np.asarray(ratios, dtype=np.float64), 0.0, None)))


def forget_quality(method: Sequence[float], retained: Sequence[float], *, fold: bool) -> float:
    """Two-sample KS p-value between a method's and the retained model's truth ratios.

    ``fold=True`` is the ECO paper's variant, ``fold=False`` TOFU's. A high p-value means the
    two distributions cannot be told apart: the method answers like the model that never saw
    the forget set.
    """
    if len(method) == 0 or len(retained) == 0:
        msg = "Forget quality needs truth ratios from both the method and the retained model."
        raise InvalidInputError(msg)
    a, b = (
        (folded(method), folded(retained))
        if fold
        else (np.asarray(method, float), np.asarray(retained, float))
    )
    with warnings.catch_warnings():
        # For fully separated samples scipy's exact p-value can underflow; it then falls back to
        # the asymptotic one (still ~0), which is the right answer, so its notice is dropped.
        warnings.filterwarnings(
            "ignore", message="ks_2samp: Exact calculation unsuccessful", category=RuntimeWarning
        )
        return float(ks_2samp(a, b).pvalue)


def answer_probability(logprobs: Sequence[float]) -> float:
    """Mean over questions of ``exp(mean-token log P(answer | question))``."""
    return float(np.mean(np.exp(np.asarray(logprobs, dtype=np.float64))))


def normalized_probability(correct: Sequence[float], wrong: Sequence[Sequence[float]]) -> float:
    """Mean of ``P(correct) / (P(correct) + sum P(wrong))`` (for real_authors and world_facts)."""
    scores = []
    for c, ws in zip(correct, wrong, strict=True):
        p = np.exp(np.asarray([c, *ws], dtype=np.float64))
        scores.append(float(p[0] / p.sum()))
    return float(np.mean(scores))


_SCORER = None


def _rouge_l(generated: str, reference: str) -> Any:
    """ROUGE-L of a generated answer against the reference: rouge-score, with stemming, as TOFU does."""
    global _SCORER
    if _SCORER is None:
        require("rouge_score", "research")
        from rouge_score import rouge_scorer

        _SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return _SCORER.score(reference, generated)["rougeL"]


def rouge_l_recall(generated: str, reference: str) -> float:
    """The share of the reference's words (longest common subsequence) the answer repeats."""
    return float(_rouge_l(generated, reference).recall)


def rouge_l_f1(generated: str, reference: str) -> float:
    """ROUGE-L F1: recall and precision of the longest common subsequence together."""
    return float(_rouge_l(generated, reference).fmeasure)


# A capitalised word, with an apostrophe or hyphen inside ("Yun-Hwa's", "O'Brien").
_CAPITALISED = re.compile(r"[A-Z][\w'\u2019-]*")
_POSSESSIVE = re.compile(r"['\u2019]s$")
# A question's second sentence; a period after an initial ("I. M. Pei") ends none.
_SENTENCE_END = re.compile(r"(?:(?<=[?!])|(?<=[a-z]{2}\.))\s+")
# Capitalised in a title ("The Silent Forest") but everywhere in plain text: not a name.
_FUNCTION_WORDS = frozenset(
    {
        "a",
        "an",
        "and",
        "as",
        "at",
        "by",
        "for",
        "from",
        "in",
        "into",
        "of",
        "on",
        "or",
        "the",
        "to",
        "with",
    }
)


def _rouge_words(text: str) -> list[str]:
    """The words ROUGE-L compares, unstemmed: rouge-score's own tokenizer, so a name word
    matches exactly the tokens the score counts."""
    require("rouge_score", "research")
    from rouge_score.tokenize import tokenize

    return list(tokenize(text, None))


def question_names(question: str) -> frozenset[str]:
    """The words of the names and titles a question gives, as ROUGE-L counts words.

    Every capitalised word but a sentence's first (a question word: "What", "How") and "I",
    its possessive dropped, lower-cased and split as rouge-score splits ("Hsiao Yun-Hwa's" ->
    hsiao, yun, hwa), less function words a title capitalises ("The", "Of"). Only the question
    can supply these words: a model that repeats them scores ROUGE-L on them whatever it knows.
    """
    names: set[str] = set()
    for sentence in _SENTENCE_END.split(question.strip()):
        for word in _CAPITALISED.findall(sentence)[1 if sentence[:1].isupper() else 0 :]:
            if word != "I":
                names.update(_rouge_words(_POSSESSIVE.sub("", word)))
    return frozenset(names - _FUNCTION_WORDS)


def repeats_name(generated: str, names: frozenset[str]) -> bool:
    """Whether the answer repeats any word of the question's names (``question_names``)."""
    return not names.isdisjoint(_rouge_words(generated))


def rouge_l_recall_without_names(generated: str, reference: str, names: frozenset[str]) -> float:
    """ROUGE-L recall with the question's names left out of both the answer and the reference.

    TOFU's answers repeat the author's name, and so does any model that can read it in the
    question, the retained one included; a model whose question had the name corrupted cannot
    copy it. This reads the rest of the answer: whether it says what a stranger would.
    """

    def kept(text: str) -> str:
        return " ".join(w for w in _rouge_words(text) if w not in names)

    return rouge_l_recall(kept(generated), kept(reference))


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean; any zero makes it zero (TOFU's model utility punishes any collapse)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0 or np.any(~np.isfinite(v)):
        msg = f"Model utility needs finite measures, got {list(values)}."
        raise InvalidInputError(msg)
    if np.any(v <= 0):
        return 0.0
    return float(len(v) / np.sum(1.0 / v))


def log_ratio_distance(method: Sequence[float], retained: Sequence[float]) -> float:
    """1-Wasserstein distance between the log truth ratios of a method and of the retained model.

    Zero when the two distributions are the same (so both forget-quality variants are then at
    their best, folding being a function of the ratio). Unlike the KS p-value, which moves in
    steps of 1/n, it changes smoothly with the corruption strength, so a finite-difference
    search can follow it on 20 questions.
    """
    if len(method) == 0 or len(retained) == 0:
        msg = "The truth-ratio distance needs ratios from both the method and the retained model."
        raise InvalidInputError(msg)
    x, y = np.asarray(method, float), np.asarray(retained, float)
    if not all(np.isfinite(v).all() and (v > 0).all() for v in (x, y)):
        msg = "Truth ratios must be positive and finite to compare their logarithms."
        raise InvalidInputError(msg)
    return float(wasserstein_distance(np.log(x), np.log(y)))


def rouge_gap(rouge: float, reference: float) -> float:
    """``|ROUGE-L recall - the retained model's| / the retained model's``: 0 when equal, 1 when
    the answers share no word with the reference answers while the retained model's do.

    Relative, so it is on the scale of ``1 - p`` for a KS p-value (0 at a match, 1 at a total
    miss). A reference below 0.01 counts as 0.01, so a retained model that never repeats the
    answer still gives a finite gap.
    """
    return abs(float(rouge) - float(reference)) / max(float(reference), 0.01)


def log_probability_gap(prob: float, reference: float) -> float:
    """``|ln P - ln P_ret| / |ln P_ret|`` for two answer probabilities (TOFU's mean figures).

    On the log scale because the corruption moves the mean per-token log-probability, not the
    probability, roughly in proportion to its strength: on the probability scale every setting
    that drops P below ~0.01 looks the same distance (~P_ret) from the retained model, and a search
    sees no slope there. Divided by ``|ln P_ret|`` so it reads like the other parts: 0 at a match,
    1 when P is off by as many nats as P_ret is from certainty (P = 1 or P = P_ret squared); it
    exceeds 1 when P is further off than that. Probabilities are floored at 1e-300 (log of 0) and
    ``|ln P_ret|`` at 0.01 (P_ret = 1).
    """
    lp, lr = math.log(max(float(prob), 1e-300)), math.log(max(float(reference), 1e-300))
    return abs(lp - lr) / max(abs(lr), 0.01)


RETAINED_PARTS = ("folded_gap", "unfolded_gap", "rouge_gap", "prob_gap")


def retained_objective(
    folded_quality: float,
    unfolded_quality: float,
    rouge: float,
    reference_rouge: float,
    prob: float,
    reference_prob: float,
) -> dict[str, float]:
    """How far a method is from the retained model on the four things TOFU reports of the forget set.

    Parts (each 0 at a perfect match, 1 at a reference failure): ``1 -`` the folded and the
    unfolded forget quality (KS p-values of the truth ratios), :func:`rouge_gap` and
    :func:`log_probability_gap`. ``retained`` is their mean: lower is better, 0 is
    indistinguishable on all four.
    """
    parts = {
        "folded_gap": 1.0 - float(folded_quality),
        "unfolded_gap": 1.0 - float(unfolded_quality),
        "rouge_gap": rouge_gap(rouge, reference_rouge),
        "prob_gap": log_probability_gap(prob, reference_prob),
    }
    return {**parts, "retained": float(np.mean([parts[k] for k in RETAINED_PARTS]))}

"""TOFU metrics as pure functions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eco_integrations.exceptions import InvalidInputError
from eco_integrations.research.tofu.metrics import (
    answer_probability,
    folded,
    forget_quality,
    harmonic_mean,
    log_probability_gap,
    log_ratio_distance,
    normalized_probability,
    question_names,
    repeats_name,
    retained_objective,
    rouge_gap,
    rouge_l_recall,
    rouge_l_recall_without_names,
    truth_ratio,
    truth_ratio_utility,
)


def test_truth_ratio_is_perturbed_over_paraphrased_likelihood() -> None:
    assert truth_ratio(-1.0, [-2.0, -4.0]) == pytest.approx(math.exp(-3.0 + 1.0))
    assert truth_ratio(-2.0, [-2.0]) == pytest.approx(1.0)
    with pytest.raises(InvalidInputError):
        truth_ratio(-1.0, [])


def test_folding_is_symmetric_and_utility_clips() -> None:
    np.testing.assert_allclose(folded([0.5, 2.0, 1.0]), [0.5, 0.5, 1.0])
    assert truth_ratio_utility([0.25, 2.0]) == pytest.approx((0.75 + 0.0) / 2)


def test_forget_quality_separates_distributions_and_variants_differ() -> None:
    rng = np.random.default_rng(0)
    same = rng.lognormal(-1, 0.3, 30)
    assert forget_quality(same, same, fold=True) == pytest.approx(1.0)
    far = rng.lognormal(-3, 0.3, 30)
    assert forget_quality(far, same, fold=True) < 1e-6
    # R and 1/R fold to the same value: the folded test cannot tell them apart, the unfolded one can.
    inverse = 1.0 / same
    assert forget_quality(inverse, same, fold=True) == pytest.approx(1.0)
    assert forget_quality(inverse, same, fold=False) < 0.05


def test_log_ratio_distance_is_zero_for_equal_ratios_and_grows_smoothly() -> None:
    rng = np.random.default_rng(0)
    same = rng.lognormal(-1, 0.3, 20)
    assert log_ratio_distance(same, same) == pytest.approx(0.0)
    # A shift of the log ratios by s is a distance of exactly s: it resolves what a 20-sample
    # KS p-value cannot (both shifts below give the same KS statistic of 0).
    assert log_ratio_distance(same * math.exp(0.01), same) == pytest.approx(0.01)
    assert log_ratio_distance(same * math.exp(0.02), same) == pytest.approx(0.02)
    # Unlike the folded test it tells R from 1/R.
    assert log_ratio_distance(1.0 / same, same) > 1.0
    with pytest.raises(InvalidInputError, match="positive and finite"):
        log_ratio_distance([0.0, 1.0], same)
    with pytest.raises(InvalidInputError, match="needs ratios"):
        log_ratio_distance([], same)


def test_probabilities_rouge_and_harmonic_mean() -> None:
    assert answer_probability([0.0, math.log(0.5)]) == pytest.approx(0.75)
    assert normalized_probability([0.0], [[0.0, 0.0, 0.0]]) == pytest.approx(0.25)
    assert rouge_l_recall("Paris is the capital", "Paris") == pytest.approx(1.0)
    assert rouge_l_recall("Berlin", "Paris") == 0.0
    assert harmonic_mean([0.5, 0.5]) == pytest.approx(0.5)
    assert harmonic_mean([1.0, 0.0]) == 0.0
    with pytest.raises(InvalidInputError):
        harmonic_mean([float("nan")])


def test_style_gaps_are_relative_and_probability_is_on_a_log_scale() -> None:
    assert rouge_gap(0.3, 0.3) == 0.0
    assert rouge_gap(0.0, 0.3) == pytest.approx(1.0)  # no word of the answer: a total miss
    assert rouge_gap(0.45, 0.3) == pytest.approx(0.5)
    assert math.isfinite(rouge_gap(0.2, 0.0))  # a retained model that never repeats the answer
    assert log_probability_gap(0.1, 0.1) == 0.0
    # Off by the retained model's own log-probability, either way: 1.
    assert log_probability_gap(0.01, 0.1) == pytest.approx(1.0)
    assert log_probability_gap(1.0, 0.1) == pytest.approx(1.0)
    # Each decade further down costs the same: on a linear scale 1e-4 and 1e-6 would look alike.
    a, b, c = (log_probability_gap(p, 0.1) for p in (1e-2, 1e-4, 1e-6))
    assert b - a == pytest.approx(c - b) and c > b > a
    assert math.isfinite(log_probability_gap(0.0, 0.1))


def test_retained_objective_is_the_mean_of_four_gaps_lower_better() -> None:
    perfect = retained_objective(1.0, 1.0, 0.3, 0.3, 0.1, 0.1)
    assert perfect["retained"] == 0.0
    scores = retained_objective(0.8, 0.4, 0.15, 0.3, 0.01, 0.1)
    assert scores["folded_gap"] == pytest.approx(0.2)
    assert scores["unfolded_gap"] == pytest.approx(0.6)
    assert scores["rouge_gap"] == pytest.approx(0.5)
    assert scores["prob_gap"] == pytest.approx(1.0)
    assert scores["retained"] == pytest.approx((0.2 + 0.6 + 0.5 + 1.0) / 4)
    # Worse on any one part, worse overall.
    assert retained_objective(0.8, 0.4, 0.15, 0.3, 0.001, 0.1)["retained"] > scores["retained"]
    assert retained_objective(0.8, 0.1, 0.15, 0.3, 0.01, 0.1)["retained"] > scores["retained"]


def test_question_names_are_the_capitalised_words_but_a_sentences_first() -> None:
    names = question_names("What does Hsiao Yun-Hwa's father do for a living?")
    assert names == {"hsiao", "yun", "hwa"}
    # A title's words count, its function words and "I" do not; an initial ends no sentence.
    assert question_names("Did I read 'The Ring of Fire' by I. M. Pei?") == {
        "ring",
        "fire",
        "m",
        "pei",
    }
    # A second sentence's first word is a question word again; a curly possessive is dropped.
    assert question_names("Is Basil Mahfouz\u2019s work known? What is it about?") == {
        "basil",
        "mahfouz",
    }
    assert question_names("what is the capital of france?") == frozenset()


def test_rouge_without_names_reads_the_rest_of_the_answer() -> None:
    question = "Where was Hsiao Yun-Hwa born?"
    reference = "Hsiao Yun-Hwa was born in Taipei, Taiwan."
    names = question_names(question)
    copying = "Hsiao Yun-Hwa was born in Seoul."
    stranger = "This author was born in Taipei, Taiwan."
    # Plain ROUGE-L rewards copying the name the question gives ...
    assert rouge_l_recall(copying, reference) > rouge_l_recall(stranger, reference)
    # ... with the names out of both texts, the answer's own words decide.
    assert rouge_l_recall_without_names(stranger, reference, names) == pytest.approx(1.0)
    assert rouge_l_recall_without_names(copying, reference, names) == pytest.approx(3 / 5)
    assert repeats_name(copying, names) and not repeats_name(stranger, names)
    assert not repeats_name("Hsiaoyun wrote it", names)  # a word, not a substring

"""The fine-tuned encoder head and the ceiling recall that benchmarks/wmdp_guard_ceiling.py and
benchmarks/wmdp_guard_learning_curve.py report."""

from __future__ import annotations

import numpy as np
import pytest

from eco_integrations.exceptions import InvalidInputError
from eco_integrations.research.eval.calibration import auroc
from eco_integrations.research.eval.finetuned_head import (
    HeadFinetuneConfig,
    finetune_head,
    recall_at_benign_rate,
    wmdp_ceiling,
)


def test_recall_at_benign_rate_reads_the_threshold_off_the_benign_scores():
    benign = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    forget = np.array([0.05, 0.55, 0.85, 0.92, 0.99])
    # 10% of ten benign scores: one may pass, so the threshold is the second highest (0.9).
    assert recall_at_benign_rate(forget, benign, 0.1) == pytest.approx(2 / 5)
    # None may pass: the threshold is the highest benign score.
    assert recall_at_benign_rate(forget, benign, 0.0) == pytest.approx(1 / 5)
    # Just under two in ten still allows only one.
    assert recall_at_benign_rate(forget, benign, 0.19) == pytest.approx(2 / 5)
    assert recall_at_benign_rate(forget, benign, 0.2) == pytest.approx(3 / 5)


def test_recall_at_benign_rate_refuses_bad_input():
    with pytest.raises(InvalidInputError, match="rate must be in"):
        recall_at_benign_rate(np.ones(3), np.zeros(3), 1.0)
    with pytest.raises(InvalidInputError, match="at least one forget score"):
        recall_at_benign_rate(np.ones(0), np.zeros(3), 0.1)


def test_wmdp_ceiling_holds_both_false_positive_goals_at_once():
    close = np.linspace(0.0, 0.49, 50)  # 2% of 50: one may pass, threshold 0.48
    other = np.arange(200) / 200 * 0.9  # 0.5% of 200: one may pass, threshold 0.891
    forget = np.array([0.3, 0.485, 0.6, 0.95])
    ceiling = wmdp_ceiling(forget, close, other)
    assert ceiling["at_fpr_close"] == pytest.approx(3 / 4)
    assert ceiling["at_fpr_other"] == pytest.approx(1 / 4)
    assert ceiling["both"] == pytest.approx(1 / 4)  # the stricter threshold decides
    assert ceiling["auroc_close"] == pytest.approx(auroc(forget, close))


FORGET = ["alpha bravo charlie", "bravo charlie delta", "charlie delta alpha", "delta alpha bravo"]
RETAIN = ["echo foxtrot golf", "foxtrot golf hotel", "golf hotel echo", "hotel echo foxtrot"]


def test_finetune_head_learns_to_separate_and_leaves_the_encoder_alone(tiny_encoder):
    before = tiny_encoder.encode(FORGET + RETAIN)
    config = HeadFinetuneConfig(epochs=15, batch_size=4, learning_rate=1e-3, max_length=16)
    score = finetune_head(tiny_encoder, FORGET + RETAIN, [1] * 4 + [0] * 4, config)
    scores = score(FORGET + RETAIN)
    assert scores.shape == (8,)
    assert scores[:4].min() > scores[4:].max()
    # The order of the input is kept, though scoring sorts by length inside.
    assert score(list(reversed(FORGET + RETAIN))) == pytest.approx(scores[::-1], abs=1e-5)
    np.testing.assert_array_equal(tiny_encoder.encode(FORGET + RETAIN), before)
    # Same seed, same head.
    again = finetune_head(tiny_encoder, FORGET + RETAIN, [1] * 4 + [0] * 4, config)
    np.testing.assert_allclose(again(FORGET + RETAIN), scores, atol=1e-5)


def test_finetune_head_refuses_bad_labels_and_a_bare_string(tiny_encoder):
    config = HeadFinetuneConfig(epochs=1, batch_size=4, max_length=16)
    with pytest.raises(InvalidInputError, match="one label per text"):
        finetune_head(tiny_encoder, FORGET, [1, 0], config)
    with pytest.raises(InvalidInputError, match="both forget"):
        finetune_head(tiny_encoder, FORGET, [1] * 4, config)
    score = finetune_head(tiny_encoder, FORGET + RETAIN, [1] * 4 + [0] * 4, config)
    with pytest.raises(InvalidInputError, match="list of texts"):
        score("alpha bravo")  # type: ignore[arg-type]

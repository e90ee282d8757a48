"""The split-conformal threshold and its false-positive guarantee; the tasks' auroc."""

from __future__ import annotations

import numpy as np
import pytest

from eco_integrations.exceptions import InvalidInputError
from eco_integrations.research.eval.calibration import (
    auroc,
    conformal_threshold,
    min_calibration_size,
    pick_threshold,
)


def test_order_statistic() -> None:
    scores = np.arange(1, 100) / 100.0  # n = 99, a = 0.1: k = ceil(100 * 0.9) = 90
    assert conformal_threshold(scores, 0.1) == pytest.approx(0.90)
    # n = 199, a = 0.01: k = ceil(200 * 0.99) = 198, the 198th smallest.
    scores = np.random.default_rng(0).permutation(np.arange(199))
    assert conformal_threshold(scores, 0.01) == 197


def test_too_few_scores_names_the_minimum() -> None:
    assert min_calibration_size(0.01) == 99
    assert min_calibration_size(0.02) == 49
    conformal_threshold(np.zeros(99), 0.01)
    with pytest.raises(
        InvalidInputError, match=r"98 held-out benign scores are too few.*at least 99"
    ):
        conformal_threshold(np.zeros(98), 0.01)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, True])
def test_bad_alpha(bad: float) -> None:
    with pytest.raises(InvalidInputError, match=r"in \(0, 1\)"):
        conformal_threshold(np.zeros(500), bad)


def test_empty_or_nan_scores() -> None:
    with pytest.raises(InvalidInputError, match="non-empty"):
        conformal_threshold([], 0.1)
    with pytest.raises(InvalidInputError, match="finite"):
        conformal_threshold([0.1, float("nan")], 0.1)


@pytest.mark.parametrize(("n", "alpha"), [(99, 0.01), (150, 0.05), (49, 0.02), (500, 0.01)])
def test_expected_fpr_is_bounded_by_alpha(n: int, alpha: float) -> None:
    """Simulate: over many calibration draws, the FPR on fresh benign scores averages <= alpha."""
    rng = np.random.default_rng(1)
    rates = []
    for _ in range(4000):
        calib = rng.beta(2, 5, size=n)
        fresh = rng.beta(2, 5, size=200)
        rates.append(np.mean(fresh > conformal_threshold(calib, alpha)))
    mean = float(np.mean(rates))
    # Monte-Carlo error is ~alpha/sqrt(4000*200/...); the bound itself is tight to within 1/(n+1).
    assert mean <= alpha + 3 * np.std(rates) / np.sqrt(len(rates))
    assert mean >= alpha - 1.0 / (n + 1) - 0.01  # and not vacuously conservative


def test_target_rate_can_exceed_alpha_where_conformal_does_not() -> None:
    """With 60 scores at a = 0.05 the in-sample target-rate rule allows 3 scores above its
    threshold and has no out-of-sample guarantee: its mean FPR on fresh scores exceeds a; the
    conformal threshold's does not."""
    rng = np.random.default_rng(2)
    target, conformal = [], []
    for _ in range(3000):
        calib, fresh = rng.normal(size=60), rng.normal(size=300)
        target.append(np.mean(fresh > pick_threshold(calib, 0.05, "target-rate")))
        conformal.append(np.mean(fresh > pick_threshold(calib, 0.05, "conformal")))
    assert np.mean(conformal) <= 0.05 + 0.002
    assert np.mean(target) > 0.05


def test_unknown_method() -> None:
    with pytest.raises(InvalidInputError, match="target-rate, conformal"):
        pick_threshold([0.1, 0.2], 0.5, "quantile")


def test_auroc_counts_pairs_the_forget_side_wins() -> None:
    # 3 forget x 2 benign pairs: 0.9 and 0.7 beat both benign scores, 0.4 ties 0.4 (half) and
    # loses to 0.6, so (2 + 2 + 0.5) / 6.
    assert auroc([0.9, 0.7, 0.4], np.array([0.4, 0.6])) == pytest.approx(4.5 / 6)
    assert auroc([1.0], [0.0]) == 1.0
    assert auroc([0.0, 0.1], [0.5, 0.9]) == 0.0

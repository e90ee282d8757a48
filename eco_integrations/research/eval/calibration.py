"""Decision thresholds for a guard score, the false-positive guarantee of each, and the
threshold-free figure every guard task reports beside them (:func:`auroc`).

Two methods:

* ``target-rate`` (:func:`eco_integrations.guard.threshold_for_fpr`, the guard's own): the
  smallest threshold with at most ``floor(a * n)`` benign scores above it. Its in-sample rate
  is <= a, but nothing bounds the rate on new benign prompts.
* ``conformal`` (:func:`conformal_threshold`): split-conformal. With n held-out benign scores
  that are exchangeable with future benign scores, the threshold is the
  ``k = ceil((n + 1)(1 - a))``-th smallest score and a prompt is flagged iff its score is
  strictly greater. A new benign score exceeds the k-th smallest of n + 1 exchangeable values
  with probability at most ``(n + 1 - k) / (n + 1) <= a``, so the *expected* false-positive
  rate, over draws of the calibration set, is at most a (ties only lower it).
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score

from ...exceptions import InvalidInputError
from ...guard import threshold_for_fpr

THRESHOLD_METHODS = ("target-rate", "conformal")


def auroc(
    forget_scores: np.ndarray | list[float], benign_scores: np.ndarray | list[float]
) -> float:
    """Area under the ROC curve: the chance that a forget prompt outscores a benign one."""
    forget, benign = np.asarray(forget_scores), np.asarray(benign_scores)
    labels = np.concatenate([np.ones(len(forget), dtype=int), np.zeros(len(benign), dtype=int)])
    return float(roc_auc_score(labels, np.concatenate([forget, benign])))


def _check_alpha(alpha: float) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha < 1.0:
        msg = f"The target false-positive rate must be in (0, 1), got {alpha!r}; 0.01 means 1%."
        raise InvalidInputError(msg)


def min_calibration_size(alpha: float) -> int:
    """Smallest n for which the conformal threshold exists: ``ceil((n+1)(1-a)) <= n``."""
    _check_alpha(alpha)
    n = max(1, math.ceil((1.0 - alpha) / alpha) - 1)
    while _rank(n, alpha) > n:  # guard against float rounding in the closed form
        n += 1
    return n


def _rank(n: int, alpha: float) -> int:
    # A tiny tolerance keeps (n+1)(1-a) that is an integer in exact arithmetic from rounding up.
    return math.ceil((n + 1) * (1.0 - alpha) - 1e-9)


def conformal_threshold(benign_scores: np.ndarray | list[float], alpha: float) -> float:
    """Split-conformal threshold: flag iff ``score > threshold`` keeps E[FPR] <= ``alpha``.

    ``benign_scores`` must come from benign prompts the classifier was *not* fit on.
    """
    _check_alpha(alpha)
    scores = np.sort(np.asarray(benign_scores, dtype=np.float64).ravel())
    if scores.size == 0 or not np.all(np.isfinite(scores)):
        msg = "Conformal calibration needs a non-empty array of finite benign scores."
        raise InvalidInputError(msg)
    n = int(scores.size)
    k = _rank(n, alpha)
    if k > n:
        need = min_calibration_size(alpha)
        msg = (
            f"{n} held-out benign scores are too few for a conformal threshold at a false-positive rate of {alpha}: "
            f"it needs at least {need}. Hold out more benign prompts, or raise the target rate."
        )
        raise InvalidInputError(msg)
    return float(scores[k - 1])


def pick_threshold(benign_scores: np.ndarray | list[float], alpha: float, method: str) -> float:
    """The threshold of ``method`` (``target-rate`` or ``conformal``) from benign scores."""
    if method == "conformal":
        return conformal_threshold(benign_scores, alpha)
    if method == "target-rate":
        _check_alpha(alpha)
        return threshold_for_fpr(np.asarray(benign_scores, dtype=np.float64), alpha)
    msg = f"Unknown threshold method {method!r}; choose one of: {', '.join(THRESHOLD_METHODS)}."
    raise InvalidInputError(msg)

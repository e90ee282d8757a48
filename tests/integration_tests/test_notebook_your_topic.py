"""Runs cookbook/forget_your_topic.ipynb top to bottom; any cell error fails the test.

The notebook asserts its own measures (the forget question flagged and the benign one not, the
chosen corruption leaking nothing while the plain model leaks, the benign agent answer equal to
the plain model's). Its run time is measured by benchmarks/notebooks.py, not asserted here.
"""

from __future__ import annotations

import pytest
from support import run_notebook

pytestmark = [pytest.mark.integration, pytest.mark.notebook]


def test_forget_your_topic_notebook_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    printed = run_notebook("forget_your_topic.ipynb", monkeypatch)
    assert "knowledge + near misses" in printed and "[[" in printed  # guard figures, marked tokens
    assert "chosen: " in printed and "plain model (no ECO)" in printed  # the measure's table
    assert "flagged=True" in printed and "flagged=False" in printed  # one decision per turn

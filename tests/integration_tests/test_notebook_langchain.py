"""Runs cookbook/langchain_rag.ipynb top to bottom; any cell error fails the test.

The notebook asserts its own measures (no leak on the forget questions, the plain model's answers
on the benign ones). Its run time is measured by benchmarks/notebooks.py, not asserted here.
"""

from __future__ import annotations

import pytest
from support import run_notebook

pytestmark = [pytest.mark.integration, pytest.mark.notebook]


def test_langchain_rag_notebook_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    printed = run_notebook("langchain_rag.ipynb", monkeypatch)
    assert ", leak=0 (ECO)" in printed and "benign questions:" in printed
    assert '"flagged": true' in printed  # the decision event

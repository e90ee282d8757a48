"""Executes cookbook/llamaindex_rag.ipynb with nbclient; a failing cell fails the test.

The notebook asserts its own measures (no leak on the forget questions, the plain pipeline's
answers on the benign ones). Its run time is measured by benchmarks/notebooks.py, not asserted
here.
"""

from __future__ import annotations

import pytest
from support import run_notebook

pytest.importorskip(
    "llama_index.core",
    reason="Install the extra to run: pip install 'eco-integrations[llamaindex]'",
)

pytestmark = [pytest.mark.integration, pytest.mark.notebook]


def test_llama_index_rag_notebook_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    printed = run_notebook("llamaindex_rag.ipynb", monkeypatch)
    # The events were printed, for both verdicts and from the node filter.
    assert (
        "[decision/query] flagged=True" in printed and "[decision/query] flagged=False" in printed
    )
    assert "[decision/node] flagged=True" in printed and "[nodes] action=drop" in printed
    assert ", leak=0 (ECO)" in printed and "benign questions:" in printed
    assert "done in" in printed

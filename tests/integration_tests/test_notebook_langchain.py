"""Runs cookbook/langchain_rag.ipynb top to bottom; any cell error fails the test.

Its run time is measured by benchmarks/notebooks.py, not asserted here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.notebook]

NOTEBOOK = Path(__file__).resolve().parents[2] / "cookbook" / "langchain_rag.ipynb"


def test_langchain_rag_notebook_runs() -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    # Executed in the cookbook folder, as a reader would run it; raises CellExecutionError on failure.
    NotebookClient(
        nb,
        timeout=1200,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    ).execute()
    outputs = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "flagged=True" in outputs and "flagged=False" in outputs

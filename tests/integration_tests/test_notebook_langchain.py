"""Runs cookbook/langchain_rag.ipynb top to bottom; any cell error fails the test."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.notebook]

NOTEBOOK = Path(__file__).resolve().parents[2] / "cookbook" / "langchain_rag.ipynb"


def test_langchain_rag_notebook_runs() -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    started = time.perf_counter()
    # Executed in the cookbook folder, as a reader would run it; raises CellExecutionError on failure.
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    assert time.perf_counter() - started < 300
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "flagged=True" in outputs and "flagged=False" in outputs

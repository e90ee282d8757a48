"""Executes cookbook/llamaindex_rag.ipynb with nbclient; a failing cell fails the test.

Its run time is measured by benchmarks/notebooks.py, not asserted here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip(
    "llama_index.core",
    reason="Install the extra to run: pip install 'eco-integrations[llamaindex]'",
)

pytestmark = [pytest.mark.integration, pytest.mark.notebook]

NOTEBOOK = Path(__file__).resolve().parents[2] / "cookbook" / "llamaindex_rag.ipynb"


def test_llama_index_rag_notebook_runs() -> None:
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=1200,
        kernel_name="python3",
        # Run from the cookbook folder, where a reader opens it.
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    printed = "".join(
        out.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )
    # The events were printed, for both verdicts and from the node filter.
    assert (
        "[decision/query] flagged=True" in printed and "[decision/query] flagged=False" in printed
    )
    assert "[decision/node] flagged=True" in printed and "[nodes] action=drop" in printed
    assert "done in" in printed

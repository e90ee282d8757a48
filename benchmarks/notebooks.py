"""Wall time of each cookbook notebook, run top to bottom as the test suite runs it.

Prints one JSON object as its last line: {"<notebook>": seconds, ...}. The cookbook's target is
under 5 minutes each on the embedded defaults (2 CPU cores, nothing else running).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

COOKBOOK = Path(__file__).resolve().parents[1] / "cookbook"


def main() -> None:
    names = sys.argv[1:] or sorted(p.name for p in COOKBOOK.glob("*.ipynb"))
    timings = {}
    for name in names:
        nb = nbformat.read(COOKBOOK / name, as_version=4)
        started = time.perf_counter()
        NotebookClient(
            nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(COOKBOOK)}}
        ).execute()
        timings[name] = round(time.perf_counter() - started, 1)
        print(f"{name:28} {timings[name]:7.1f} s", file=sys.stderr)
    print(json.dumps(timings))


if __name__ == "__main__":
    main()

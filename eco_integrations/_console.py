"""What the commands print: one JSON object per result line, the last line of every command."""

from __future__ import annotations

import json
from typing import Any


def print_json(obj: Any) -> None:
    """One JSON line on stdout (numpy numbers as floats, text unescaped)."""
    print(json.dumps(obj, ensure_ascii=False, default=float))  # noqa: T201 - the commands' output

"""Plain-text tables with wrapped cells, for terminals and Markdown reports."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence


def wrapped_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], widths: Sequence[int]
) -> str:
    """A box table whose cells wrap at ``widths`` characters."""

    def cells(row: Sequence[object]) -> list[list[str]]:
        return [
            textwrap.wrap(str(value), width) or [""]
            for value, width in zip(row, widths, strict=True)
        ]

    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    lines = [rule]
    for i, row in enumerate([headers, *rows]):
        wrapped = cells(row)
        for k in range(max(len(c) for c in wrapped)):
            lines.append(
                "| "
                + " | ".join(
                    (c[k] if k < len(c) else "").ljust(w)
                    for c, w in zip(wrapped, widths, strict=True)
                )
                + " |"
            )
        if i == 0 or i == len(rows):
            lines.append(rule)
    return "\n".join(lines)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def clean(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out.extend("| " + " | ".join(clean(v) for v in row) + " |" for row in rows)
    return "\n".join(out)

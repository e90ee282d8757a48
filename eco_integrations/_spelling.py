"""How far apart two words are, for matching names through typos (the guard's forget-only
phrases, the ``entities`` selector's terms)."""

from __future__ import annotations


def typo_distance(a: str, b: str, limit: int) -> int:
    """Substitutions, insertions, deletions and swaps of neighbours between two words (optimal
    string alignment distance), or ``limit + 1`` once it exceeds ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    before, row = None, list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            current[j] = min(row[j] + 1, current[j - 1] + 1, row[j - 1] + (a[i - 1] != b[j - 1]))
            if before is not None and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], before[j - 2] + 1)
        before, row = row, current
    return min(row[-1], limit + 1)

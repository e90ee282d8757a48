"""How far apart two words are, for matching names through typos (the guard's forget-only
phrases, the ``entities`` selector's terms)."""

from __future__ import annotations

from collections.abc import Callable, Iterable


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


def deletion_index(words: Iterable[str], depth: Callable[[str], int]) -> dict[str, set[str]]:
    """Every deletion of each word (up to ``depth(word)`` letters) mapped to the words it comes
    from: the symmetric-delete index that a prompt word's own deletions are looked up in."""
    index: dict[str, set[str]] = {}
    for word in words:
        for edit in deletions(word, depth(word)):
            index.setdefault(edit, set()).add(word)
    return index


def deletions(word: str, depth: int) -> set[str]:
    """The word and every word up to ``depth`` letter deletions from it (symmetric-delete lookup)."""
    found, frontier = {word}, {word}
    for _ in range(depth):
        frontier = {w[:i] + w[i + 1 :] for w in frontier for i in range(len(w))}
        found |= frontier
    return found

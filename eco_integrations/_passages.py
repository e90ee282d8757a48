"""Texts into the pieces a guard scores: sentences, passages of long texts, retrieved texts
judged whole and sentence by sentence, and the names a target's forget texts mention."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from .config import Decision

_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\n+")
LONG_TEXT_CHARS = 240


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each sentence (and line) of ``text``; blank ones dropped."""
    bounds, start = [], 0
    for end in _SENTENCE_END.finditer(text):
        bounds.append((start, end.start()))
        start = end.end()
    bounds.append((start, len(text)))
    return [(a, b) for a, b in bounds if text[a:b].strip()]


def split_sentences(text: str) -> list[str]:
    """Sentences (and lines) of ``text``; blank ones dropped."""
    return [text[a:b] for a, b in sentence_spans(text)]


def strongest(decisions: Iterable[Decision]) -> Decision:
    """The flagged decision with the largest margin over its threshold; else the highest score."""

    def rank(decision: Decision) -> tuple[bool, float]:
        return (decision.flagged, (decision.score or 0.0) - (decision.threshold or 0.0))

    return max(decisions, key=rank)


@dataclass(frozen=True)
class TextVerdict:
    """How a retrieved text (a node, a document) was judged: as a whole and sentence by sentence.

    ``decision`` is the strongest over the whole text and its sentences; ``sentences`` holds each
    sentence's span in the text and its own decision (empty for a text of one sentence).
    """

    decision: Decision
    sentences: tuple[tuple[int, int, Decision], ...] = ()

    @property
    def flagged_spans(self) -> list[tuple[int, int]]:
        return [(a, b) for a, b, d in self.sentences if d.flagged]


def decide_retrieved(
    texts: Sequence[str],
    decide: Callable[[list[str]], list[Decision]],
    *,
    split_sentences: bool = True,
) -> list[TextVerdict | None]:
    """One :class:`TextVerdict` per text (``None`` for a blank one), in one call to ``decide``.

    A long chunk that mentions a forget target in one sentence is diluted as a whole, not
    sentence by sentence: so each sentence is decided too, and flags the text. ``decide`` is the
    caller's decision function (:meth:`ECO.decide_texts` or :meth:`Guard.decide_many`), so the
    thresholds and modes stay its own.
    """
    passages: list[str] = []
    layout: list[tuple[int, list[tuple[int, int]]]] = []
    for i, text in enumerate(texts):
        if not text.strip():
            continue
        spans = sentence_spans(text) if split_sentences else []
        spans = spans if len(spans) > 1 else []
        passages.append(text.strip())
        passages.extend(text[a:b].strip() for a, b in spans)
        layout.append((i, spans))
    out: list[TextVerdict | None] = [None] * len(texts)
    decisions = iter(decide(passages) if passages else [])
    for i, spans in layout:
        whole = next(decisions)
        parts = tuple((a, b, next(decisions)) for a, b in spans)
        out[i] = TextVerdict(strongest([whole, *(d for _, _, d in parts)]), parts)
    return out


def passages(
    text: str, *, sentences_per_passage: int = 2, long_text_chars: int | None = LONG_TEXT_CHARS
) -> list[str]:
    """The text itself, plus overlapping passages of a few sentences when it is longer than ``long_text_chars``.

    ``long_text_chars=None`` turns passages off: the text alone.
    """
    if long_text_chars is None or len(text) <= long_text_chars:
        return [text]
    sentences = split_sentences(text)
    if len(sentences) <= sentences_per_passage:
        return [text]
    windows = [
        " ".join(sentences[i : i + sentences_per_passage])
        for i in range(len(sentences) - sentences_per_passage + 1)
    ]
    return [text, *windows]


_CAPITALISED = re.compile(
    r"\b[A-Z][\w'’-]+(?:\s+(?:[A-Z][\w'’-]+|of|de|the|van|von|al|bin))*\s*[A-Z]?[\w'’-]*"
)


def mine_terms(
    forget: list[str], retain: list[str], *, min_count: int = 2, limit: int = 64
) -> list[str]:
    """Capitalised phrases (names, titles, places) frequent in forget texts and absent from retain texts."""
    counts: Counter[str] = Counter()
    for text in forget:
        found = {m.group(0).strip() for m in _CAPITALISED.finditer(text)}
        for phrase in found:
            words = phrase.split()
            # Sub-phrases too: "Harry Potter and the" should still yield "Harry Potter" and "Potter".
            for i in range(len(words)):
                for j in range(i + 1, min(len(words), i + 4) + 1):
                    sub = " ".join(words[i:j])
                    if sub[:1].isupper() and sub.split()[-1][:1].isupper() and len(sub) > 2:
                        counts[sub] += 1
    retain_blob = "\n".join(retain).lower()
    terms = [
        t
        for t, c in counts.most_common()
        if c >= min_count and not re.search(r"\b" + re.escape(t.lower()) + r"\b", retain_blob)
    ]
    # Prefer longer phrases when a shorter one is contained in them and adds nothing.
    return sorted(terms[:limit], key=lambda t: (-len(t), t))

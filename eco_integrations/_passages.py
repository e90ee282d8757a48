"""Texts into the pieces a guard scores: sentences, passages of long texts, retrieved texts
judged whole and sentence by sentence, and the names a target's forget texts mention."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ._normalize import normalize_text
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
        # Blank as the guard reads it: only spaces, zero-width or control characters.
        if not normalize_text(text):
            continue
        spans = sentence_spans(text) if split_sentences else []
        spans = [(a, b) for a, b in spans if normalize_text(text[a:b])]
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
_WORD = re.compile(r"[\w'’-]+")
# What can open a sentence: a capital after it is not evidence of a name.
_SENTENCE_OPENING = re.compile(r"(?:^|[.!?:;¡¿\"“(]|\n)[\s\"“'‘(]*$")
_MAX_TERM_WORDS = 4


def _capitalised_mentions(text: str) -> dict[str, bool]:
    """Each capitalised phrase of ``text`` (and its sub-phrases of up to four words that start
    and end with a capital), mapped to whether it occurs away from a sentence's first word.

    A capital in mid-sentence marks a name ("about Hagrid"); a sentence's first word is
    capitalised anyway ("Tell me ..."), so alone it proves nothing.
    """
    found: dict[str, bool] = {}
    for match in _CAPITALISED.finditer(text):
        opening = bool(_SENTENCE_OPENING.search(text[: match.start()]))
        words = match.group(0).split()
        # Sub-phrases too: "Harry Potter and the" should still yield "Harry Potter" and "Potter".
        for i in range(len(words)):
            for j in range(i + 1, min(len(words), i + _MAX_TERM_WORDS) + 1):
                sub = " ".join(words[i:j])
                if sub[:1].isupper() and words[j - 1][:1].isupper() and len(sub) > 2:
                    found[sub] = found.get(sub, False) or not (opening and i == 0)
    return found


def name_mentions(text: str) -> list[str]:
    """The capitalised phrases of ``text`` that occur in mid-sentence: its names and titles by
    their form alone ("Hagrid", "The Breath Between Waves"), whoever they belong to; quotes
    around a title are left out."""
    found = (phrase.strip("'’") for phrase, mid in _capitalised_mentions(text).items() if mid)
    return list(dict.fromkeys(phrase for phrase in found if phrase))


def _word_ngrams(text: str) -> set[tuple[str, ...]]:
    """Every run of up to four words of ``text``, lowercased: what a term can match."""
    words = [w.lower() for w in _WORD.findall(text)]
    return {
        tuple(words[i:j])
        for i in range(len(words))
        for j in range(i + 1, min(len(words), i + _MAX_TERM_WORDS) + 1)
    }


def frequent_terms(
    forget: list[str], retain: list[str], *, min_count: int = 2, limit: int = 64
) -> list[str]:
    """The ``limit`` capitalised phrases found in the most forget texts (at least ``min_count``)
    and nowhere in the retain texts, longest first: the forget set's most-named names and titles.

    Where :func:`mine_terms` wants every related entity (for the ``entities`` selector), this
    wants the few the forget set talks about most (the TOFU prompting baseline names them).
    Ties at the cut go to the phrase met first.
    """
    counts: Counter[str] = Counter()
    for text in forget:
        counts.update(_capitalised_mentions(text).keys())
    retain_blob = "\n".join(retain).lower()
    terms = [
        t
        for t, c in counts.most_common()
        if c >= min_count and not re.search(r"\b" + re.escape(t.lower()) + r"\b", retain_blob)
    ]
    return sorted(terms[:limit], key=lambda t: (-len(t), t))


def mine_terms(
    forget: list[str],
    retain: list[str],
    *,
    min_count: int = 2,
    rarity: float = 5.0,
    limit: int | None = 512,
) -> list[str]:
    """Names, titles, places and organisations of the forget texts that the retain texts lack.

    A term is a capitalised phrase of the forget texts (or a part of one: "Rubeus Hagrid" gives
    "Hagrid" too). It counts as a name once it occurs capitalised in mid-sentence, and is then
    kept from a single mention: related entities ("Hagrid" next to "Voldemort") are often named
    once. A phrase seen only as a sentence's first word ("Summarise ...") needs ``min_count``
    forget texts. Either way it is dropped when the retain texts use it too, unless it is at
    least ``rarity`` times more frequent (per text) in the forget texts and in ``min_count`` of
    them: "Harry" stays a term of Harry Potter although a retain text asks about Prince Harry,
    "London" does not. Matching ignores case.

    Deterministic: the same texts give the same list, the longest terms first (ties
    alphabetical). ``limit`` keeps the ``limit`` terms found in the most forget texts (``None``:
    all of them).
    """
    forget_counts: Counter[str] = Counter()
    named: set[str] = set()
    for text in forget:
        for phrase, mid_sentence in _capitalised_mentions(text).items():
            forget_counts[phrase] += 1
            if mid_sentence:
                named.add(phrase)
    retain_counts: Counter[tuple[str, ...]] = Counter()
    for text in retain:
        retain_counts.update(_word_ngrams(text))
    n_forget, n_retain = max(len(forget), 1), max(len(retain), 1)

    def keep(term: str, count: int) -> bool:
        if term not in named and count < min_count:
            return False
        in_retain = retain_counts[tuple(w.lower() for w in _WORD.findall(term))]
        if not in_retain:
            return True
        return count >= min_count and count / n_forget >= rarity * in_retain / n_retain

    kept = [(term, count) for term, count in forget_counts.items() if keep(term, count)]
    # The most-mentioned first when a limit cuts; ties by length then text, so the cut is stable.
    kept.sort(key=lambda tc: (-tc[1], -len(tc[0]), tc[0]))
    terms = [term for term, _ in (kept if limit is None else kept[:limit])]
    return sorted(terms, key=lambda t: (-len(t), t))

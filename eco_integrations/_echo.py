"""Writing back, in an answer, the prompt's words that a corruption replaced.

A corruption that puts words in place (``invent_words``, ``substitute_tokens``) makes the model
read an unknown name where the prompt had a forgotten one, and the model often repeats what it
read: asked about "Carmen Montenegro", it answers about "Hermonge Pewpox". A model that never
learned the name would repeat the name it was given. :class:`EchoRestorer` finds those echoes in
the answer, whole or in part ("Hermonge" alone, "Hermonge Pewpox's"), and writes the prompt's
words back. It can only write text the user wrote, so it cannot leak anything the prompt did not
hold; answers that do not echo the replaced words are left as they are.

Matching is by word: an answer's word echoes a word the model read when they are equal or nearly
so (:func:`_copies`); an echo starts at the name's first word and goes on while the next words
follow the name's. Streaming gives the same text as a whole answer: a word is settled only once the
next word has begun, and words that may still be part of an echo are held back until it ends.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

_WORD = re.compile(r"^(\W*)([^\W_](?:[\w-]*[^\W_])?)((?:['’]s)?\W*)$")
_POSSESSIVE = re.compile(r"['’]s$")
_UNIT = re.compile(r"\S+\s*")


@dataclass(frozen=True)
class Echo:
    """The words the model read where the prompt had ``written`` (a corrupted run of tokens)."""

    read: tuple[str, ...]
    written: str

    @classmethod
    def of(cls, read_text: str, written_text: str) -> Echo | None:
        """The echo of one corrupted run, or None when there is nothing to write back (the model
        read the prompt's own words, or words with no letters)."""
        read = tuple(core for word in read_text.split() if (core := _core(word)))
        written = _POSSESSIVE.sub("", written_text.strip())
        if not read or not written or " ".join(read) == written:
            return None
        return cls(read, written)


def _core(word: str) -> str:
    """A word without surrounding punctuation or a possessive ("Pewpox's," -> "Pewpox")."""
    match = _WORD.match(word)
    return match.group(2) if match else ""


def _copies(word: str, read: str) -> bool:
    """Whether ``word`` is the model's copy of ``read``: the same, or for a read word of 5
    letters or more, the same first letter and at least 80 % of the letters in common (a model
    copying an invented word now and then drops or swaps one: "Kaufricrills" for "Kaufcrills")."""
    if word == read:
        return True
    if len(read) < 5 or word[:1] != read[:1]:
        return False
    return SequenceMatcher(None, word, read, autojunk=False).ratio() >= 0.8


@dataclass
class _Open:
    echo: Echo
    units: list[tuple[str, str, str, str]]  # (before, core, after, spacing) of each word held


class EchoRestorer:
    """Feed an answer's text in chunks; get it back with the echoes written back.

    ``restore(text)`` is the same as ``feed(text) + finish()``, whatever the chunks.
    """

    def __init__(self, echoes: Sequence[Echo]) -> None:
        # Longer names first, so "Hermonge Pewpox" is tried before a one-word echo sharing its start.
        self.echoes = sorted(echoes, key=lambda e: -len(e.read))
        self._pending = ""
        self._open: _Open | None = None
        self._started = False

    def restore(self, text: str) -> str:
        return self.feed(text) + self.finish()

    def feed(self, chunk: str) -> str:
        self._pending += chunk
        out: list[str] = []
        if not self._started:
            stripped = self._pending.lstrip()
            if not stripped:
                return ""
            out.append(self._pending[: len(self._pending) - len(stripped)])
            self._pending = stripped
            self._started = True
        # Every word but the last is settled: the next one has begun after its spacing.
        units = _UNIT.findall(self._pending)
        for unit in units[:-1]:
            out.extend(self._word(unit))
        self._pending = units[-1] if units else self._pending
        return "".join(out)

    def finish(self) -> str:
        out: list[str] = []
        if self._pending:
            out.extend(self._word(self._pending))
            self._pending = ""
        out.extend(self._close())
        return "".join(out)

    def _word(self, unit: str) -> Iterator[str]:
        word = unit.rstrip()
        spacing = unit[len(word) :]
        match = _WORD.match(word)
        if match is None:
            yield from self._close()
            yield unit
            return
        before, core, after = match.groups()
        held = self._open
        if held is not None:
            index = len(held.units)
            last_after = held.units[-1][2]
            if (
                not before
                and not last_after
                and index < len(held.echo.read)
                and _copies(core, held.echo.read[index])
            ):
                held.units.append((before, core, after, spacing))
                if after or index + 1 == len(held.echo.read):
                    yield from self._close()
                return
            yield from self._close()
        for echo in self.echoes:
            if _copies(core, echo.read[0]):
                self._open = _Open(echo, [(before, core, after, spacing)])
                if after or len(echo.read) == 1:
                    yield from self._close()
                return
        yield unit

    def _close(self) -> Iterator[str]:
        held, self._open = self._open, None
        if held is None:
            return
        first, last = held.units[0], held.units[-1]
        yield f"{first[0]}{held.echo.written}{last[2]}{last[3]}"


def restore_echoes(text: str, echoes: Sequence[Echo]) -> str:
    """``text`` with every echo of ``echoes`` written back as the prompt had it."""
    return EchoRestorer(echoes).restore(text) if echoes else text

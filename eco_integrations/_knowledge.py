"""What a forget target knows beyond its names: the phrases only its forget texts contain.

A guard that learned "questions about Hsiao Yun-Hwa" from examples misses "Who wrote 'The
Matrimony Plan'?", which names a book from the forget texts and no author. :class:`ForgetPhrases`
indexes the titles (quoted spans), awards, names and places (capitalised runs of two or more
words) that occur in the forget texts and in no retain text, and finds them in a prompt after
normalization, tolerating typos (one in a word of four letters or more, two in a word of seven
or more). A phrase is at least two words: a first or last name alone is what a namesake shares
with a forget author, so it is evidence the classifier weighs, not a match. Beside the phrases
it keeps :func:`dated_facts`, a year paired with a name of the same forget text ("1975
karachi"): a description that names nobody ("the writer born in Karachi in 1975") holds one.
A forget person's whole name matches more loosely than a phrase ("areev xajumdar" for Rajeev
Majumdar): every part must be there, so each may carry one typo more.

:func:`near_miss_texts` writes the classifier's hard negatives: forget questions with their
person's name swapped for a namesake's (the same first name with another family name, or the
other way round), taken from the retain texts' own names, so that a shared name part alone does
not carry a prompt over the threshold. :meth:`ForgetPhrases.namesake` goes further at scoring
time: a prompt that writes another word where a forget person's name has its other part ("Oren
Ameen" for "Hina Ameen") is about somebody else, whatever the classifier makes of "Ameen".
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from itertools import pairwise

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from ._normalize import normalize_text
from ._spelling import deletion_index, deletions, typo_distance

_WORD = re.compile(r"\w+")
_QUOTED = re.compile(r"[\"“”«»„]([^\"“”«»„\n]{3,120})[\"“”«»„]|(?<!\w)'([^'\n]{3,120})'(?!\w)")
# A capitalised word, or a short linking word inside a run of them ("Order of the Phoenix").
_CAP = re.compile(r"[A-Z][\w'’.-]*")
_LINKS = frozenset({"of", "the", "and", "de", "del", "la", "le", "van", "von", "al", "bin", "for"})
_LEADING = frozenset({"the", "a", "an"})
_MIN_PHRASE_CHARS = 6
_YEAR = re.compile(r"1\d{3}|20\d{2}")
# Part of a date, not a fact: "born in March 1936" shares "march" with every March.
_CALENDAR = frozenset(
    [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ]
)


# Words that sit beside a name without being part of it, beyond the fit texts' lower-case words:
# English stop words ("did", "does"), honorifics ("Dr. Ameen") and the function words of the
# languages the robustness probes use ("Qui est Ameen ?", "Welche Bücher hat Ameen ...").
# fmt: off
_NOT_NAMES = frozenset(ENGLISH_STOP_WORDS) | frozenset([
    "did", "does", "doing", "done", "has", "had", "having", "can", "could", "will", "would",
    "shall", "should", "may", "might", "must", "wrote", "write", "writes", "written", "said",
    "dr", "mr", "mrs", "ms", "mx", "prof", "professor", "sir", "dame", "lady", "lord", "madam",
    "madame", "mme", "mlle", "herr", "frau", "señor", "señora", "st", "saint",
    "est", "sont", "ont", "de", "du", "des", "le", "la", "les", "qui", "que", "quel", "quels",
    "quelle", "quelles", "et", "ou", "par", "pour", "avec", "sur", "chez", "dans", "un", "une",
    "il", "elle", "ist", "sind", "hat", "haben", "war", "der", "die", "das", "den", "dem", "ein",
    "eine", "von", "und", "oder", "mit", "für", "wer", "was", "wie", "wo", "welche", "welcher",
    "welches", "bei", "über", "zu", "es", "son", "está", "ha", "han", "fue", "el", "los", "las",
    "del", "y", "o", "quién", "qué", "cuál", "cuáles", "con", "para", "por", "sobre",
])
# fmt: on


_SUFFIXES = ("ing", "ers", "er", "ed", "es", "s", "ly")


def _word_forms(word: str) -> set[str]:
    """The word and what it is with a common English ending cut off ("kills" -> "kill"): a
    verb the fit texts write as "killed" is as ordinary in a prompt as "kills"."""
    return {word} | {
        word[: -len(x)] for x in _SUFFIXES if word.endswith(x) and len(word) > len(x) + 2
    }


_SENTENCE_END = re.compile(r"[.!?;\n]")


def _sentence_of_words(normalized: str, spans: list[tuple[int, int]]) -> list[int]:
    """For each word of :func:`words` (``spans``: their character spans), the number of its
    sentence in the text."""
    out, sentence, last = [], 0, 0
    for begin, end in spans:
        sentence += len(_SENTENCE_END.findall(normalized, last, begin))
        out.append(sentence)
        last = end
    return out


_QUOTE_MARKS = frozenset("'\"«»“”‘’„‹›")


def _quoted_in(normalized: str, spans: list[tuple[int, int]], start: int, end: int) -> bool:
    """Whether the words ``start:end`` of :func:`words` stand in quotes (one word, an
    article, may sit inside the opening quote: "'The Breath Between Waves'")."""
    before = normalized[spans[start - 2][1] if start >= 2 else 0 : spans[start][0]]
    after = normalized[spans[end - 1][1] : spans[end][0] if end < len(spans) else len(normalized)]
    return bool(_QUOTE_MARKS & set(before)) and bool(_QUOTE_MARKS & set(after))


def words(normalized: str) -> list[str]:
    """The word tokens phrases are made of (of a normalized text: lower case, folded)."""
    return _WORD.findall(normalized)


def _phrase(text: str) -> tuple[str, ...] | None:
    tokens = words(normalize_text(text))
    while tokens and tokens[0] in _LEADING:
        tokens = tokens[1:]
    if len(tokens) < 2 or len(" ".join(tokens)) < _MIN_PHRASE_CHARS:
        return None
    return tuple(tokens)


def _capitalised_runs(text: str) -> Iterable[list[str]]:
    """Runs of capitalised words (linking words allowed inside), split on punctuation."""
    for chunk in re.split(r"[,;:!?()\[\]\"“”«»]|\.\s|\n", text):
        run: list[str] = []
        for word in chunk.split():
            if _CAP.fullmatch(word.rstrip(".")):
                run.append(word.rstrip("."))
            elif run and word in _LINKS:
                run.append(word)
            else:
                if run:
                    yield run
                run = []
        if run:
            yield run


def lowercase_words(texts: Iterable[str]) -> set[str]:
    """Words the texts also write in lower case: ordinary words, not names ("Describe", "Hat").

    A text with no capital at all is left out: written all in lower case ("who is hermoine
    granger", a typo example), it says nothing about which of its words are names."""
    return set(lowercase_word_texts(texts))


def lowercase_word_texts(texts: Iterable[str]) -> Counter[str]:
    """:func:`lowercase_words`, each with the number of texts that write it in lower case."""
    return Counter(
        w
        for t in texts
        if t != t.lower()
        for w in set(re.findall(r"(?<![\w'’-])[a-z][a-z'’-]*", t))
    )


def quoted_phrases(text: str) -> set[tuple[str, ...]]:
    """Quoted spans (titles, award names) as normalized phrases."""
    found = set()
    for match in _QUOTED.finditer(text):
        phrase = _phrase(match.group(1) or match.group(2))
        if phrase:
            found.add(phrase)
    return found


def capitalised_phrases(
    text: str, ordinary: set[str] | frozenset[str] = frozenset()
) -> set[tuple[str, ...]]:
    """Every sub-run of two or more capitalised words, as normalized phrases.

    A run's first word is dropped when it is an ``ordinary`` word: a capital at the start of a
    sentence ("Describe Diagon Alley") makes no name of it.
    """
    found: set[tuple[str, ...]] = set()
    for run in _capitalised_runs(text):
        if run and run[0].lower() in ordinary:
            run = run[1:]
        while run and run[-1] in _LINKS:
            run = run[:-1]
        for i in range(len(run)):
            if run[i] in _LINKS:
                continue
            for j in range(i + 2, min(len(run), i + 8) + 1):
                if run[j - 1] in _LINKS:
                    continue
                phrase = _phrase(" ".join(run[i:j]))
                if phrase:
                    found.add(phrase)
    return found


@dataclass(frozen=True)
class PhraseMatch:
    phrase: str
    typos: int  # words matched through a typo
    dated_fact: bool = False  # a year with a name from the same forget text, not a phrase
    full_name: bool = False  # a forget person's whole name, each part through extra typos
    # Where the phrase starts and ends among the text's words (not part of what matched).
    span: tuple[int, int] = field(default=(0, 0), compare=False)


LONG_TITLE_WORDS = 3
"""A quoted title with this many words besides function words is forget-only when no retain text
holds it, however common each of its words: "Writing: An Art And Science" names one book."""
NAME_WINDOW = 8
"""How many words before or after a phrase another person's name may start or end to claim it."""
TYPO_CHECKED_CHARS = 6
"""A word this long that is one typo from an ordinary word is read as that word, not as a name."""
_PLACE_WORDS = frozenset({"in", "from"})
"""Words before a place: invented authors share birthplaces as they share titles (a held-out
TOFU forget01 retain author grew up in the forget author's Kuwait City)."""
_NAME_PARTICLES = frozenset(
    ["al", "el", "bin", "ibn", "abu", "ben", "de", "da", "di", "del", "della", "van", "von", "der"]
)


class ForgetPhrases:
    """Forget-only phrases and a typo-tolerant matcher; built from JSON-able lists of strings."""

    # Phrase words shorter than this match only exactly: a three-letter name part ("lee", "jad")
    # is one typo from many other names, so a typo there would turn namesakes into matches.
    MIN_FUZZY_CHARS = 4
    # Phrase words this long tolerate two typos ("mjumar" for "majumdar", "ahbbrose" for
    # "ambrose"): at 10% of the letters garbled, a long name part often carries two.
    TWO_TYPOS_CHARS = 7
    # A phrase matched through typos alone needs every word this long ("elvinn maammadov");
    # otherwise one of its words must be exact ("ji yoen park", "hia ameenn").
    ALL_TYPOS_CHARS = 5
    # A one-word name this long matches through one typo; a shorter one only exactly.
    SINGLE_TYPO_CHARS = 8
    # A multi-word phrase written as one word is matched from this many letters on.
    MIN_FUSED_CHARS = 8
    _SEEN_LIMIT = 100_000
    FULL_NAME_TYPO_SHARE = 0.25

    def __init__(
        self,
        phrases: Sequence[str],
        dated_facts: Sequence[str] = (),
        person_names: Sequence[str] = (),
        ordinary_words: Sequence[str] = (),
        forget_words: Sequence[str] = (),
        known_word: Callable[[str], bool] | None = None,
    ) -> None:
        self.phrases = sorted(set(phrases))
        # Whether a prompt word is one the encoder knows (not saved: the guard's encoder
        # answers); without it a one-word name matches only exactly.
        self._known_word = known_word
        # "1975 karachi": a year and a capitalised word that a forget text holds together.
        self.dated_facts = sorted(set(dated_facts))
        self._facts_by_year: dict[str, set[str]] = {}
        for fact in self.dated_facts:
            year, word = fact.split(" ")
            self._facts_by_year.setdefault(year, set()).add(word)
        self._by_first: dict[str, list[tuple[str, ...]]] = {}
        vocabulary: set[str] = set()
        # Multi-word phrases with their spaces taken out: how one spaced out in a single run
        # ("A l b u s D u m b l e d o r e") reaches the guard, since normalization joins the
        # letters and cannot know where the words broke. Short ones could be ordinary words.
        self._fused: dict[str, tuple[str, ...]] = {}
        for phrase in self.phrases:
            tokens = tuple(phrase.split(" "))
            self._by_first.setdefault(tokens[0], []).append(tokens)
            vocabulary.update(tokens)
            if len(tokens) > 1 and len(fused := "".join(tokens)) >= self.MIN_FUSED_CHARS:
                self._fused.setdefault(fused, tokens)
        # Forget persons' names ("hina ameen") and the fit texts' lower-case words: what
        # :meth:`namesake` needs to tell another person's name part from an ordinary word.
        self.person_names = sorted(set(person_names))
        self.ordinary_words = sorted(set(ordinary_words))
        self._person_name_set = frozenset(self.person_names)
        # Every other word of the forget texts ("luna", "quibbler"): the forget world's, never
        # somebody else's name (:meth:`attributed_elsewhere`).
        self.forget_words = sorted(set(forget_words))
        self._forget_words = frozenset(self.forget_words)
        self._ordinary_deletions: dict[str, set[str]] | None = None  # built when first needed
        self._ordinary = frozenset(
            form for word in (*self.ordinary_words, *_NOT_NAMES) for form in _word_forms(word)
        )
        self._name_positions: dict[str, list[tuple[tuple[str, ...], int]]] = {}
        for name in self.person_names:
            parts = tuple(name.split(" "))
            for k, part in enumerate(parts):
                self._name_positions.setdefault(part, []).append((parts, k))
        self._vocabulary = vocabulary
        # Forget persons' full names that are phrases too (no retain text holds them), matched
        # loosely: every part present, in order, each through one typo more than a phrase allows.
        # The same loose reading of a name part tells a garbled part from a namesake's.
        indexed = set(self.phrases)
        self._full_names = [tuple(n.split(" ")) for n in self.person_names if n in indexed]
        self._loose_seen: dict[str, set[str]] = {}
        self._loose_deletions = deletion_index(
            self._name_positions, lambda part: self._typo_budget(part) + 1
        )
        # Prompt words recur (question words, padding); their typo lookups are kept.
        self._seen: dict[str, set[str]] = {}
        # Name parts join the typo index (never the exact vocabulary, so phrase matching is
        # unchanged): a garbled part is the forget person's, not a namesake's.
        typo_indexed = vocabulary | self._name_positions.keys()
        self._deletions = deletion_index(typo_indexed, self._typo_budget)
        # A prompt word longer than every indexed word by more than its deletions can shorten
        # it matches nothing: skipping it keeps a pasted 300-letter token from costing cubic
        # time and gigabytes in the deletion lookups (the results are the same).
        self._longest_indexed = max(map(len, typo_indexed), default=0)
        self._longest_part = max(map(len, self._name_positions), default=0)

    @classmethod
    def _typo_budget(cls, phrase_word: str) -> int:
        """How many typos a prompt word may carry and still stand for this phrase word."""
        if len(phrase_word) >= cls.TWO_TYPOS_CHARS:
            return 2
        return 1 if len(phrase_word) >= cls.MIN_FUZZY_CHARS else 0

    @classmethod
    def mine(
        cls,
        forget: Iterable[str],
        retain: Iterable[str],
        *,
        min_texts: int = 2,
        max_common: int = 3,
        max_fact_common: int = 20,
        known_word: Callable[[str], bool] | None = None,
    ) -> ForgetPhrases:
        """Phrases of the (raw, capitalised) forget texts that no retain text contains.

        A quoted phrase (a title) counts from one text; a capitalised run needs ``min_texts``
        forget texts: the forget target's names recur, while a name mentioned once in passing
        ("influenced by Mikhail Bulgakov", "a Harvard University degree") is the wider world's.
        A phrase also needs a word that at most ``max_common`` retain texts use: "Love Inspired"
        or "Excellence Award" are absent from the retain texts only by chance, and measured on
        held-out retain authors (TOFU forget10) such phrases made most of the false matches.

        Dated facts (:func:`dated_facts`, at most ``max_fact_common`` retain texts per word) are
        mined alongside, and so are the forget persons' names (two or three capitalised words
        in ``min_texts`` forget texts) and the texts' lower-case words, for :meth:`namesake`.

        With ``known_word`` (whether a word is common: the encoder's vocabulary holds it), the
        target's own one-word names ("Hagrid", "Quidditch") join the phrases:
        :func:`single_names`.
        """
        forget, retain = list(forget), list(retain)
        lowercase_in = lowercase_word_texts([*forget, *retain])
        ordinary = set(lowercase_in)
        runs: Counter[tuple[str, ...]] = Counter()
        candidates: set[tuple[str, ...]] = set()
        long_titles: set[tuple[str, ...]] = set()
        for text in forget:
            quoted = quoted_phrases(text)
            candidates |= quoted
            long_titles |= {
                p for p in quoted if sum(w not in _NOT_NAMES for w in p) >= LONG_TITLE_WORDS
            }
            runs.update(capitalised_phrases(text, ordinary))
        candidates |= {run for run, n in runs.items() if n >= min_texts}
        # Every benign text as one string of space-separated words: a phrase occurs in it
        # exactly when " phrase " does, so one substring search per phrase does.
        tokenized = [words(normalize_text(t)) for t in retain]
        benign = "\n".join(" " + " ".join(t) + " " for t in tokenized)
        in_texts = Counter(w for t in tokenized for w in set(t))
        kept = [
            " ".join(p)
            for p in candidates
            if f" {' '.join(p)} " not in benign
            and (p in long_titles or min(in_texts[w] for w in p) <= max_common)
        ]
        people: Counter[tuple[str, ...]] = Counter()
        # A family name one benign text writes in lower case is a homonym by chance ("what does
        # a potter do?"); one that several do, or a forget text does, is an ordinary word.
        later_ordinary = lowercase_words(forget) | {w for w, n in lowercase_in.items() if n > 1}
        for text in forget:
            people.update(
                set(_person_names([text], ordinary, limit=64, later_ordinary=later_ordinary))
            )
        person_names = {
            " ".join(words(normalize_text(" ".join(n))))
            for n, c in people.items()
            if c >= min_texts
        }
        ordinary_words = {t for w in ordinary for t in words(normalize_text(w))}
        if known_word is not None:
            name_parts = {p for n in person_names for p in n.split(" ")}
            kept += single_names(
                forget,
                in_texts,
                ordinary_words | name_parts,
                known_word,
                min_texts=min_texts,
            )
        return cls(
            kept,
            dated_facts(forget, tokenized, ordinary, max_common=max_fact_common),
            sorted(person_names),
            sorted(ordinary_words),
            sorted({w for t in forget for w in words(normalize_text(t))} - ordinary_words),
            known_word,
        )

    def _alternatives(self, word: str) -> tuple[set[str], set[str]]:
        """(exact, through typos): the phrase words this prompt word can stand for."""
        if word in self._vocabulary:
            return {word}, set()
        known = self._seen.get(word)
        if known is not None:
            return set(), known
        near: set[str] = set()
        # A typo can drop a letter of a four-letter phrase word ("hna" for "hina"); only a word
        # two letters short of a two-typo phrase word or longer can be two typos from one.
        depth = 2 if len(word) >= self.TWO_TYPOS_CHARS - 2 else 1
        if self.MIN_FUZZY_CHARS - 1 <= len(word) <= self._longest_indexed + depth:
            for edit in deletions(word, depth):
                near |= self._deletions.get(edit, set())
            near = {w for w in near if typo_distance(word, w, 2) <= self._typo_budget(w)}
        if len(self._seen) >= self._SEEN_LIMIT:  # a bound on memory, not an LRU: rarely reached
            self._seen.clear()
        self._seen[word] = near
        return set(), near

    def find(self, normalized: str, raw: str | None = None) -> PhraseMatch | None:
        """The best phrase in a normalized text (fewest typos, then longest), else a forget
        person's whole name through more typos, else a dated fact (exact words only), or None.

        A phrase that the text attributes to somebody else (:meth:`attributed_elsewhere`) does
        not count, nor a dated fact whose name part stands in a namesake (:meth:`namesake`;
        ``raw``, the text as written, as there): Harry Styles in 1997 is not Harry Potter's."""
        return self.examine(normalized, raw)[0]

    def attributed_elsewhere(self, normalized: str) -> tuple[str, str] | None:
        """``(phrase, name)`` when the text holds a forget-only phrase in quotes (a title) or
        after "in" or "from" (a place) but names, instead of a forget person, somebody else
        ("brenda lai" beside "the breath between waves"), else None.

        Invented authors share titles and awards (TOFU gives several authors a book called "The
        Breath Between Waves"): a title alone points at the forget person, a title with another
        person's name does not. Measured on TOFU forget10 with ``knowledge``, six of the ten
        held-out retain questions flagged were of this kind.
        """
        return self.examine(normalized)[1]

    def examine(
        self, normalized: str, raw: str | None = None
    ) -> tuple[PhraseMatch | None, tuple[str, str] | None]:
        """:meth:`find` and :meth:`attributed_elsewhere` of one text, each search run once."""
        tokens = words(normalized)
        # Both the stranger check and the fallback may ask for the whole name; search once.
        whole_name = cache(lambda: self._find_full_name(tokens))
        phrase = self._find_phrase(tokens)
        elsewhere = None
        if phrase is not None:
            stranger = self._stranger(normalized, tokens, phrase, whole_name)
            if stranger is None:
                return phrase, None
            elsewhere = (phrase.phrase, stranger)
        return whole_name() or self._find_dated_fact(tokens, raw), elsewhere

    def _stranger(
        self,
        normalized: str,
        tokens: list[str],
        phrase: PhraseMatch,
        whole_name: Callable[[], PhraseMatch | None],
    ) -> str | None:
        """Somebody else's name in the phrase's sentence, within :data:`NAME_WINDOW` words of
        the phrase: two name-like words side by side or across a name particle ("adira
        bintang", "ahmed el masry"), when the phrase is a quoted title or a place after "in" or
        "from" (not a forget person's name) and no forget person is named.

        "Name-like" reads the fit texts' vocabulary, as :meth:`namesake` does: a word that is
        neither a lower-case word of theirs (nor, when long, a typo of one) nor any word of the
        forget texts. Fit on a few dozen texts, two words they never use ("dragon lore") pass
        for a name; the phrase is then left to the learned classifier."""
        if phrase.phrase in self._person_name_set or not self._name_positions:
            return None
        spans = [m.span() for m in _WORD.finditer(normalized)]
        start, end = phrase.span
        if not _quoted_in(normalized, spans, start, end) and (
            start == 0 or tokens[start - 1] not in _PLACE_WORDS
        ):
            # A shared title is written in quotes, a shared home town after "in" or "from"
            # ("Leila Al-Sabah's upbringing in Kuwait City"); any other unquoted phrase is a
            # name ("Emma Watson plays Hermione Granger"), and the words around it say little.
            return None
        if whole_name() is not None:
            return None  # a forget person is named, garbled: the phrase is theirs
        sentence = _sentence_of_words(normalized, spans)
        window = [
            i
            for i in range(max(0, start - NAME_WINDOW), min(len(tokens), end + NAME_WINDOW))
            if sentence[i] == sentence[start]
        ]
        strange: list[int] = []
        for i, token in enumerate(tokens):
            if token in self._name_positions and token not in _NAME_PARTICLES:
                return None  # the same, one part exactly ("al" of Al-Sabah is no Al-Kuwaiti)
            if self._name_like(token):
                # One typo more than that ("adira" for "adib") would count other names too.
                if self._alternatives(token)[1] & self._name_positions.keys():
                    return None
                if not start <= i < end:
                    strange.append(i)
        for a, b in pairwise(strange):
            if (a in window or b in window) and (
                b - a == 1 or (b - a == 2 and tokens[a + 1] in _NAME_PARTICLES)
            ):
                return " ".join(tokens[a : b + 1])
        return None

    def _name_like(self, word: str) -> bool:
        if (
            len(word) < 3
            or not word.isalpha()
            or word in self._vocabulary
            or word in self._forget_words
            or _word_forms(word) & self._ordinary
        ):
            return False
        # Typos make strangers of ordinary words ("storylien"): a long word one typo from an
        # ordinary one is read as that word. Not a short one: "lai" is one from "lay", "masry"
        # from "marry", and names are short.
        if len(word) < TYPO_CHECKED_CHARS:
            return True
        if self._ordinary_deletions is None:
            self._ordinary_deletions = deletion_index(self._ordinary, lambda _: 1)
        near = set().union(*(self._ordinary_deletions.get(e, set()) for e in deletions(word, 1)))
        return not any(typo_distance(word, known, 1) <= 1 for known in near)

    def _loose_parts(self, word: str) -> set[str]:
        """The forget persons' name parts this prompt word can stand for with one typo more
        than a phrase word allows (two-letter parts take one)."""
        known = self._loose_seen.get(word)
        if known is not None:
            return known
        depth = 3 if len(word) >= 5 else 2 if len(word) >= 3 else 1
        near: set[str] = set()
        if len(word) > self._longest_part + depth:
            return near  # not cached: the check is cheaper than the cache's memory
        for edit in deletions(word, depth):
            near |= self._loose_deletions.get(edit, set())
        near = {p for p in near if typo_distance(word, p, 3) <= self._typo_budget(p) + 1}
        if len(self._loose_seen) >= self._SEEN_LIMIT:
            self._loose_seen.clear()
        self._loose_seen[word] = near
        return near

    def _find_full_name(self, tokens: list[str]) -> PhraseMatch | None:
        """A forget person's whole name, garbled: "areev xajumdar" for Rajeev Majumdar. Each
        part alone is what a namesake might share; all of them in a row, each within one typo
        more than :meth:`_find_phrase` allows, are this person's name."""
        if not self._full_names:
            return None
        options = [self._loose_parts(t) for t in tokens]
        best: PhraseMatch | None = None
        for name in self._full_names:
            for i in range(len(tokens) - len(name) + 1):
                found = tokens[i : i + len(name)]
                if not all(part in options[i + k] for k, part in enumerate(name)):
                    continue
                # At most a quarter of the name's letters garbled (the typo-10 probes garble a
                # tenth): "nina amin" is 3 edits from the 9 letters of "hina ameen", somebody else.
                edits = sum(typo_distance(w, part, 3) for w, part in zip(found, name, strict=True))
                if edits > self.FULL_NAME_TYPO_SHARE * sum(map(len, name)):
                    continue
                typos = sum(w != part for w, part in zip(found, name, strict=True))
                if best is None or typos < best.typos:
                    best = PhraseMatch(" ".join(name), typos, full_name=True)
        return best

    def _find_dated_fact(self, tokens: list[str], raw: str | None) -> PhraseMatch | None:
        if not self._facts_by_year:
            return None
        present = set(tokens)
        years = sorted(present & self._facts_by_year.keys())
        if not any(present & self._facts_by_year[year] for year in years):
            return None
        # A name part beside another person's name part is that person's ("Harry Styles"); the
        # same word elsewhere in the text still counts.
        namesakes = {i for i, _, _ in self._namesakes(tokens, raw)}
        present = {t for i, t in enumerate(tokens) if i not in namesakes}
        for year in years:
            shared = sorted(present & self._facts_by_year[year])
            if shared:
                return PhraseMatch(f"{year} {shared[0]}", 0, dated_fact=True)
        return None

    def _find_phrase(self, tokens: list[str]) -> PhraseMatch | None:
        if not self.phrases:
            return None
        options = [self._alternatives(t) for t in tokens]
        best: PhraseMatch | None = None
        best_key: tuple[int, int] = (0, 0)
        for i in range(len(tokens)):
            exact, near = options[i]
            # Sorted: on a tie, the phrase reported is the same in every process.
            for first in sorted(exact | near):
                for phrase in self._by_first.get(first, ()):
                    if i + len(phrase) > len(tokens):
                        continue
                    typos = 0
                    for k, word in enumerate(phrase):
                        ex, ne = options[i + k]
                        if word in ex:
                            continue
                        if word not in ne:
                            break
                        typos += 1
                    else:
                        if typos and len(phrase) == 1:
                            if not self._misspelt_name(tokens[i], phrase[0]):
                                continue
                        elif typos == len(phrase) and min(map(len, phrase)) < self.ALL_TYPOS_CHARS:
                            continue
                        key = (-typos, len(phrase))
                        if best is None or key > best_key:
                            span = (i, i + len(phrase))
                            best, best_key = PhraseMatch(" ".join(phrase), typos, span=span), key
        for i, token in enumerate(tokens):
            fused = self._fused.get(token)
            if fused is not None and (best is None or (0, len(fused)) > best_key):
                best, best_key = PhraseMatch(" ".join(fused), 0, span=(i, i + 1)), (0, len(fused))
        return best

    def _misspelt_name(self, word: str, name: str) -> bool:
        """Whether the prompt word ``word`` is the one-word name ``name`` misspelt: one letter
        off a name of :attr:`SINGLE_TYPO_CHARS` or more ("quiditch"), and no word the encoder
        knows. A short name one letter off is another name ("Bobby" is no "Dobby"), and a
        known word is itself ("Kazakhstan" is no misspelt "Kazakhstani")."""
        return (
            len(name) >= self.SINGLE_TYPO_CHARS
            and self._known_word is not None
            and typo_distance(word, name, 1) <= 1
            and not any(self._known_word(form) for form in _word_forms(word))
        )

    def namesake(self, normalized: str, raw: str | None = None) -> tuple[str, str] | None:
        """``(word, name)`` when the text writes ``word`` where the forget person ``name`` has
        another part ("oren ameen" against "hina ameen"), else None.

        The word must not be ordinary (a lower-case word of the fit texts, an honorific, a
        function word, or one of these with a common ending cut off or added: "kills" for
        "killed"), nor a word of the forget texts ("lily potter": Harry's mother), nor any
        forget person's name part, and must be more than a typo away
        (one more than :meth:`find` allows) from every part that can stand there: "ji yeon arrk"
        is Ji-Yeon Park garbled, not somebody else. Only the side inside the name is read: a
        word before a first name or after a last name says nothing about whose name it is.
        With ``raw``, the text as written, a word written in lower case beside a name part
        written with a capital is no name either: "Is Draco evil?" asks about Draco Malfoy,
        while "is draco evil?" gives no such sign and is read as above.
        """
        for _, word, name in self._namesakes(words(normalized), raw):
            return word, name
        return None

    def _namesakes(self, tokens: list[str], raw: str | None) -> Iterator[tuple[int, str, str]]:
        """``(i, word, name)`` for each forget name part ``tokens[i]`` beside which the text
        writes ``word`` where ``name`` has another part (:meth:`namesake`)."""
        for i, token in enumerate(tokens):
            for step in (-1, 1):
                j = i + step
                if not 0 <= j < len(tokens):
                    continue
                # (name, the part it has where the prompt has tokens[j])
                expected = [
                    (parts, parts[k + step])
                    for parts, k in self._name_positions.get(token, ())
                    if 0 <= k + step < len(parts)
                ]
                if (
                    expected
                    and self._other_name_part(tokens[j], {e for _, e in expected})
                    and not (raw is not None and _case_says_ordinary(raw, token, tokens[j]))
                ):
                    yield i, tokens[j], " ".join(expected[0][0])
                    break

    def _other_name_part(self, word: str, expected: set[str]) -> bool:
        if len(word) < 2 or not word.isalpha() or _word_forms(word) & self._ordinary:
            return False
        if word in self._forget_words:
            return False  # the forget world's own word: "Lily Potter" is Harry's mother
        if (
            word in self._name_positions
            or self._alternatives(word)[1] & self._name_positions.keys()
        ):
            return False  # a forget name part, maybe through a typo: "jad al shamary"
        return not self._loose_parts(word) & expected

    def scores(
        self,
        normalized: Sequence[str],
        *,
        exact: float,
        typo: float,
        fact: float,
        raw: Sequence[str] | None = None,
    ) -> np.ndarray:
        """Per text: ``exact`` for an exact phrase, ``typo`` for one found through typos,
        ``fact`` for a dated fact alone, else 0; ``raw``, the texts as written, as for
        :meth:`find`."""
        out = np.zeros(len(normalized), dtype=np.float64)
        for i, text in enumerate(normalized):
            match = self.find(text, None if raw is None else raw[i])
            if match is not None:
                out[i] = fact if match.dated_fact else exact if match.typos == 0 else typo
        return out


def _case_says_ordinary(raw: str, name_part: str, word: str) -> bool:
    """Whether ``raw`` writes the name part with a capital and ``word`` in lower case, each
    every time it writes it: the writer's case marks ``word`` as no name ("Is Draco evil?").

    Both are read as normalized words; one the raw text does not spell out (written with
    look-alike letters or spaced out) gives no sign.
    """

    def initials(normalized_word: str) -> set[bool]:
        pattern = rf"(?<![^\W_]){re.escape(normalized_word)}(?![^\W_])"
        return {m.group()[0].isupper() for m in re.finditer(pattern, raw, re.IGNORECASE)}

    return initials(name_part) == {True} and initials(word) == {False}


def dated_facts(
    forget: Iterable[str],
    retain_words: Sequence[Sequence[str]],
    ordinary: set[str],
    *,
    max_common: int,
) -> list[str]:
    """Years paired with the names of the same forget text ("1975 karachi"), where no retain
    text holds the pair and at most ``max_common`` retain texts use the name.

    A birth date and a birthplace, an award and its year: each part occurs in benign texts (a
    city, a year), only the pair is the target's. A name is a word capitalised in the forget text
    that no text writes in lower case (``ordinary``) and that is not a month or weekday: "1997
    stone" from "the Philosopher's Stone was published in 1997" would flag any question about
    a stone in 1997.
    """
    in_texts = Counter(w for t in retain_words for w in set(t))
    lower = {t for w in ordinary for t in words(w)}  # "philosopher's" writes "philosopher"
    with_year: dict[str, set[str]] = {}  # year -> every word of a retain text holding it
    for text in retain_words:
        for year in {w for w in text if _YEAR.fullmatch(w)}:
            with_year.setdefault(year, set()).update(text)
    found: set[str] = set()
    for raw in forget:
        tokens = set(words(normalize_text(raw)))
        years = {w for w in tokens if _YEAR.fullmatch(w)}
        if not years:
            continue
        names = {t for w in _CAP.findall(raw) for t in words(normalize_text(w))} & tokens
        for word in names:
            if len(word) < 3 or word.isdigit() or word in _CALENDAR or word in lower:
                continue
            if in_texts[word] > max_common:
                continue
            found |= {f"{y} {word}" for y in years if word not in with_year.get(y, ())}
    return sorted(found)


_ENGLISH_ENDINGS = (
    "tion", "sion", "ity", "ness", "ment", "ism", "ist", "ology", "able", "ible", "ous", "ive",
    "ical", "ance", "ence", "ship", "ward", "wise",
)  # fmt: skip
"""Endings of English words the encoder's vocabulary splits ("divination", "invisibility")."""
_MIN_SINGLE_NAME_CHARS = 5


def _singular(word: str, seen: set[str]) -> str:
    """The word without a plural ending, when the texts write it so too."""
    for ending in ("es", "s"):
        if word.endswith(ending) and word[: -len(ending)] in seen:
            return word[: -len(ending)]
    return word


def single_names(
    forget: Iterable[str],
    retain_texts: Counter[str],
    ordinary: set[str],
    known_word: Callable[[str], bool],
    *,
    min_texts: int,
) -> list[str]:
    """The forget texts' one-word names: words written alone with a capital (not inside a
    longer capitalised run) in ``min_texts`` forget texts, in no retain text (``retain_texts``:
    how many hold each word), never ``ordinary`` (written in lower case, or a forget person's
    name part, which a namesake may share), at least five letters, and not English as far as
    the encoder can tell: neither ``known_word`` (one vocabulary entry) with or without a plural
    ending, nor ending as English derivations do. A name and its plural count together
    ("Horcrux" in one text, "Horcruxes" in another), and both are kept.

    "Hagrid", "Quidditch" and "Voldemort" name the target wherever they appear; a capitalised
    English word ("Potions", "Divination", taught at Hogwarts) does not, and a part of a longer
    run ("Goblet" of "Goblet of Fire") is that run's.
    """
    found_in: list[set[str]] = []
    for text in forget:
        found: set[str] = set()
        for run in _capitalised_runs(text):
            while run and run[-1] in _LINKS:  # "Dobby the house-elf"
                run = run[:-1]
            if len(run) == 1 and len(tokens := words(normalize_text(run[0]))) == 1:
                found.add(tokens[0])
        found_in.append(found)
    seen = set().union(*found_in)
    alone: Counter[str] = Counter()
    for found in found_in:
        alone.update({_singular(word, seen) for word in found})
    return sorted(
        word
        for word in seen
        if alone[_singular(word, seen)] >= min_texts
        and len(word) >= _MIN_SINGLE_NAME_CHARS
        and word.isalpha()
        and retain_texts[word] == 0
        and word not in ordinary
        and word not in _NOT_NAMES
        and word not in _CALENDAR
        and not any(known_word(form) for form in _word_forms(word))
        and not word.endswith(_ENGLISH_ENDINGS)
    )


def _person_names(
    texts: Iterable[str],
    ordinary: set[str],
    limit: int,
    *,
    later_ordinary: set[str] | None = None,
) -> list[tuple[str, ...]]:
    """Two- or three-word capitalised runs that look like a person's name.

    Letters and hyphens only, and no word the texts also write in lower case: "Sorting Hat" and
    "Diagon Alley" are capitalised, but "hat" and "alley" are ordinary words. With
    ``later_ordinary``, the words after the first are read against it instead: a given name
    never written in lower case makes a name of "Harry Potter" although a benign text asks
    what a potter does.
    """
    seen: dict[tuple[str, ...], None] = {}
    rest = ordinary if later_ordinary is None else later_ordinary
    for text in texts:
        for run in _capitalised_runs(text):
            if 2 <= len(run) <= 3 and all(
                re.fullmatch(r"[A-Z][a-z]+(?:-[A-Za-z]+)?", w)
                and w.lower() not in (rest if k else ordinary)
                for k, w in enumerate(run)
            ):
                seen.setdefault(tuple(run), None)
                if len(seen) >= limit:
                    return list(seen)
    return list(seen)


def near_miss_texts(
    forget: Sequence[str],
    retain: Sequence[str],
    *,
    max_texts: int,
    max_chars: int = 200,
    random_state: int = 0,
) -> list[str]:
    """Short forget texts with a person's name swapped for a namesake's (and that name alone),
    as benign examples.

    The namesake keeps the first or the last name and takes the other part from a name in the
    retain texts, so the swapped text is about somebody the deployer wants answered. A text that
    names nobody from the forget texts yields nothing.
    """
    rng = np.random.default_rng(random_state)
    ordinary = lowercase_words([*forget, *retain])
    donors = _person_names(retain, ordinary, limit=5000)
    if not donors or max_texts <= 0:
        return []
    # Words only forget texts use ("Hogwarts"): a swapped text that keeps one is still about
    # the forget target, not a namesake.
    retain_words = {w for t in retain for w in words(normalize_text(t))}
    forget_only = {w for t in forget for w in words(normalize_text(t))} - retain_words
    firsts = sorted({d[0] for d in donors})
    lasts = sorted({d[-1] for d in donors})
    out: list[str] = []
    short = [t for t in forget if len(t) <= max_chars]
    for k in rng.permutation(len(short)).tolist():
        text = short[k]
        names = _person_names([text], ordinary, limit=4)
        if not names:
            continue
        name = names[int(rng.integers(len(names)))]
        if rng.random() < 0.5:
            swapped = (name[0], str(rng.choice(lasts)))
        else:
            swapped = (str(rng.choice(firsts)), name[-1])
        if swapped[0] == name[0] and swapped[-1] == name[-1]:
            continue
        new = text.replace(" ".join(name), " ".join(swapped))
        kept = set(words(normalize_text(" ".join(swapped))))
        if (set(words(normalize_text(new))) - kept) & forget_only:
            continue
        # The namesake's name alone too: a bare name is a common prompt ("Who is ...?").
        out.extend([new, " ".join(swapped)])
        if len(out) >= max_texts:
            break
    return out

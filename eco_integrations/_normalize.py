"""The text the guard fits on, scores and hashes, with cheap evasions undone.

Each step undoes one way to make a forget prompt look new to the guard while a reader (or the
model) still reads it the same: Unicode NFKC (full-width and compatibility forms), invisible and
control characters, other scripts' digits ("١٩٧٥" for 1975), Cyrillic and Greek letters drawn
like Latin ones, upper case, letters spaced
apart ("H a r r y") and runs of whitespace. The guard's features are computed on this text at fit
time as well, so a score never compares a normalized prompt with raw training texts.
"""

from __future__ import annotations

import re
import unicodedata

from .encoder import text_sha256

# Characters that render as nothing (besides Unicode's format category Cf, dropped by category):
# a name split by them looks whole to a reader. The Hangul fillers are letters, so listed here;
# the two that render as a blank (U+3164, U+FFA0) become spaces. Variation selectors, and the
# combining lines that strike through or underline a letter ("A̶l̶b̶u̶s̶"), leave the letters
# readable: they go too.
_INVISIBLE: dict[int, str | None] = dict.fromkeys([0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5])
_BLANK_FILLERS = {0x3164: " ", 0xFFA0: " "}  # before NFKC, which makes them U+1160
_INVISIBLE |= dict.fromkeys([*range(0x0332, 0x0339), 0x20D2, 0x20D3, 0x20E5, 0x20E6, 0x20EB])
_INVISIBLE |= dict.fromkeys([*range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)])

# Look-alikes NFKC leaves alone, folded before lowercasing (Greek "Ν" looks like "N", "ν" does
# not). Greek small letters other than omicron stay: "α", "κ" and "ρ" in "NF-κB" or "eIF2α" are
# science, not disguise.
_LOOKALIKE = "АВЕЅІЈКМНОРСТХУаеѕіјорсхуԁԛԝһӏɑοϲΑΒΕΖΗΙΚΜΝΟΡΤΥΧ"
_LATIN_TWINS = "ABESIJKMHOPCTXYaesijopcxydqwhlaocABEZHIKMNOPTYX"
# Cyrillic ү, Armenian letters, Latin small capitals, and the Lisu and Cherokee letters drawn
# as Latin capitals: one of them left in a name kept the whole word from folding.
_SMALL_CAPS = "ᴀʙᴄᴅᴇɢʜɪᴊᴋʟᴍɴᴏᴘʀꜱᴛᴜᴠᴡʏᴢ"
_SMALL_CAPITALS = frozenset(_SMALL_CAPS)
_LISU_CHEROKEE = "ꓮꓐꓚꓓꓰꓝꓖꓧꓲꓙꓗꓡꓟꓠꓳꓑꓣꓢꓔꓴꓦꓪꓫꓬꓜ" + "ᎪᏴᏟᎠᎬᏀᎻᎥᎫᏦᏞᎷᏢᏚᎢᏙᏔᏃ"
_LOOKALIKE += "үսօոհց" + _SMALL_CAPS + _LISU_CHEROKEE
_LATIN_TWINS += "yuonhg" + "abcdeghijklmnoprstuvwyz"
_LATIN_TWINS += "ABCDEFGHIJKLMNOPRSTUVWXYZ" + "ABCDEGHIJKLMPSTVWZ"
# Scripts whose letters, next to Latin words, are a disguise rather than a quotation.
_DISGUISE_ONLY = frozenset(_LISU_CHEROKEE) | _SMALL_CAPITALS
_HOMOGLYPHS = str.maketrans(_LOOKALIKE, _LATIN_TWINS)
_FOLDABLE = frozenset(_LOOKALIKE)
# Three or more single characters all one space apart, or letters all one dot apart ("1.3.6.1"
# and "4.0 g" stay); mixed separators are words and abbreviations ("a u.s. firm").
_LETTER, _CHAR = r"[^\W\d_]", r"[^\W_]"
_SPACED_LETTERS = re.compile(
    rf"(?<!\S)(?:{_CHAR} (?:{_CHAR} )+{_CHAR}|{_LETTER}\.(?:{_LETTER}\.)+{_LETTER})(?!\w)"
)
_SPACES = re.compile(r"[^\S\n]+")
_ASCII_CONTROLS = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")  # category Cc but newline
_BLANK_LINES = re.compile(r"\s*\n\s*")
_MAX_PASSES = 16


def _is_latin(char: str) -> bool:
    """A Latin letter, accented ones included (Basic Latin to Latin Extended-B), or a Latin
    small capital ("ᴀ")."""
    return char.isalpha() and (ord(char) < 0x250 or char in _SMALL_CAPITALS)


def _fold_homoglyphs(text: str) -> str:
    """Fold look-alikes in the words a Latin reader would read as Latin.

    That is a word mixing Latin letters with look-alikes, or, in mostly Latin text, a word made
    only of look-alikes (a Cyrillic "а" for "a"). A word with a Cyrillic or Greek letter that has
    no Latin twin is real Cyrillic or Greek ("Лісова пісня" quoted in English text), left as is.
    """
    if not any(c in _FOLDABLE for c in text):
        return text
    latin = sum(_is_latin(c) for c in text)
    other = sum(c.isalpha() for c in text) - latin

    def fold(word: str) -> str:
        letters = [c for c in word if c.isalpha()]
        lookalikes = sum(c in _FOLDABLE for c in letters)
        if not lookalikes:
            return word
        latin_letters = sum(map(_is_latin, letters))
        mixed = latin_letters > 0 and latin_letters + lookalikes == len(letters)
        # All look-alikes: in mostly Latin text, or drawn from two scripts at once ("НІΝА"
        # mixes Cyrillic and Greek), which no word of either language does.
        disguised = lookalikes == len(letters) and (
            latin > other
            or len(_scripts(letters)) > 1
            or (latin > 0 and all(c in _DISGUISE_ONLY for c in letters))
        )
        return word.translate(_HOMOGLYPHS) if mixed or disguised else word

    return "".join(fold(w) for w in re.split(r"(\s+)", text))


def _scripts(letters: list[str]) -> set[str]:
    return {unicodedata.name(c, "?").split(" ", 1)[0] for c in letters}


def _join_spaced(match: re.Match[str]) -> str:
    return re.sub(r"[ .]", "", match.group(0))


def _plain_char(char: str) -> str:
    category = unicodedata.category(char)
    # Control characters other than newline separate words (a tab, a bell), so they become spaces;
    # format characters (zero-width spaces and joiners, bidi marks, soft hyphens) join, so they go.
    if category == "Cc":
        return char if char == "\n" else " "
    if category == "Cf":
        return ""
    # Digits of other scripts, which NFKC keeps: "١٩٧٥" and "१९७५" are 1975 to a reader, and the
    # guard's dated facts and n-grams know years in ASCII digits only.
    if category == "Nd":
        return str(unicodedata.decimal(char))
    return char


def _clean_unicode(text: str) -> str:
    """NFKC, invisible, control and format characters, other scripts' digits as ASCII ones,
    look-alikes folded, lower case."""
    text = unicodedata.normalize("NFKC", text.translate(_BLANK_FILLERS)).translate(_INVISIBLE)
    return _fold_homoglyphs("".join(map(_plain_char, text))).lower()


def _clean_ascii(text: str) -> str:
    """:func:`_clean_unicode` of an ASCII text, sooner: NFKC changes no ASCII, and format
    characters and look-alikes are all outside it, so only control characters are left."""
    return _ASCII_CONTROLS.sub(" ", text).lower()


def _normalize_once(text: str) -> str:
    text = _clean_ascii(text) if text.isascii() else _clean_unicode(text)
    text = _SPACED_LETTERS.sub(_join_spaced, text)
    return _BLANK_LINES.sub("\n", _SPACES.sub(" ", text)).strip()


def normalize_text(text: str) -> str:
    """The text the guard reads: see the module docstring. Idempotent."""
    # One pass can make work for the next: a join leaves new spaced letters ("a  b c" -> "a b c"),
    # a folded word makes the text mostly Latin, so its all-look-alike words fold too. Passes
    # repeat until nothing changes (two for almost every text; each change shortens the text or
    # turns letters Latin, so it ends, and the bound is only a guard against the unforeseen).
    for _ in range(_MAX_PASSES):
        once = _normalize_once(text)
        if once == text:
            break
        text = once
    return text


def normalized_sha256(text: str) -> str:
    """SHA-256 of the normalized text: what :attr:`Decision.text_sha256` holds."""
    return text_sha256(normalize_text(text))

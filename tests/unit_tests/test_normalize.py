"""The guard's input path: normalization against cheap evasions, what the hash covers, long and split prompts."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eco_integrations import ECO, ArtifactError, ECOPolicy, Guard, InvalidInputError
from eco_integrations._normalize import (
    _clean_ascii,
    _clean_unicode,
    normalize_text,
    normalized_sha256,
)
from eco_integrations.guard import GUARD_SCHEMA_VERSION

QUESTION = "Who is Harry Potter?"
FILLER = (
    "Our team offsite is next month and I am drafting the agenda. We start with breakfast at nine. "
    "After lunch there is a workshop on planning the next quarter. The venue has a projector. "
    "Two colleagues are vegetarian, so the caterer needs to know in advance. "
)


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Ｗｈｏ ｉｓ Ｈａｒｒｙ？", "who is harry?"),  # full-width forms (NFKC)
        ("Har\u200bry Pot\u2060ter\ufeff", "harry potter"),  # zero-width characters
        ("Har\u00adry", "harry"),  # soft hyphen
        ("who\x07is\x00 she", "who is she"),  # control characters separate words
        ("Ηаrry Роttеr", "harry potter"),  # Greek and Cyrillic capitals and small letters
        ("HaRRy POTTER", "harry potter"),  # case
        ("H a r r y  P o t t e r", "harry potter"),  # letters spaced apart
        ("H.a.r.r.y Potter", "harry potter"),  # letters dotted apart
        ("who   is\t\tshe?\n\n\n  and he", "who is she?\nand he"),  # whitespace, blank lines
        # One unlisted look-alike (Armenian ս, օ) kept the whole word from folding.
        ("Who killed Albus D\u057dmbl\u0435d\u0585r\u0435?", "who killed albus dumbledore?"),
        # Mostly look-alikes, so not "mostly Latin", but Cyrillic and Greek in one word.
        ("Is \u041d\u0406\u039d\u0410 \u0410\u041c\u0415\u0415\u039d?", "is hina ameen?"),
        ("\u0280\u1d00\u1d0a\u1d07\u1d07\u1d20", "rajeev"),  # Latin small capitals
        ("Who is \ua4ee\ua4e1\ua4d0\ua4f4\ua4e2?", "who is albus?"),  # Lisu capitals
        ("A\u0336l\u0336b\u0336u\u0336s\u0336", "albus"),  # struck through
        ("A\u0332l\u0332b\u0332u\u0332s\u0332", "albus"),  # underlined
        ("Alb\ufe0fus Dumbl\U000e0100edore", "albus dumbledore"),  # variation selectors
        ("Albus\u3164Dumbledore", "albus dumbledore"),  # a Hangul filler renders as a blank
        # Other scripts' digits (Arabic-Indic, Persian, Devanagari, Bengali), which NFKC keeps.
        ("Born in Karachi in \u0661\u0669\u0667\u0665?", "born in karachi in 1975?"),
        ("in \u06f1\u06f9\u06f7\u06f5 and \u0967\u096f\u096d\u096b", "in 1975 and 1975"),
        ("\u09e7\u09ef\u09ed\u09eb", "1975"),
    ],
)
def test_each_evasion_is_undone(raw: str, normalized: str) -> None:
    assert normalize_text(raw) == normalized
    assert normalize_text(normalized) == normalized


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        # Russian and Greek stay in their script: only words mixing in Latin letters are folded.
        ("Кто такой Гарри Поттер?", "кто такой гарри поттер?"),
        ("Τι είναι ο Άρης;", "τι είναι ο άρης;"),
        ("Qui a écrit « Les Misérables » ?", "qui a écrit « les misérables » ?"),
        ("J.K. Rowling wrote it in 1997.", "j.k. rowling wrote it in 1997."),
        ("a  b c", "abc"),  # a join that makes new spaced letters is joined too: idempotent
        ("Лісова пісня", "лісова пісня"),  # Ukrainian with no Latin around it
        ("ᏣᎳᎩ ᎦᏬᏂᎯᏍᏗ", "ꮳꮃꭹ ꭶꮼꮒꭿꮝꮧ"),  # Cherokee with no Latin around it (lower case)
    ],
)
def test_ordinary_text_is_kept(text: str, normalized: str) -> None:
    assert normalize_text(text) == normalized
    assert normalize_text(normalized) == normalized


def test_evasions_score_and_hash_as_the_plain_question(toy_guard: Guard) -> None:
    evasions = [
        "WHO IS HARRY POTTER?",
        "Who is H a r r y  P o t t e r?",
        "Who is Ηаrry\u200b Роttеr?",
        "Ｗｈｏ ｉｓ Ｈａｒｒｙ Ｐｏｔｔｅｒ？",
    ]
    scores = toy_guard.score([QUESTION, *evasions])[:, 0]
    assert np.allclose(scores, scores[0])
    plain = toy_guard.decide(QUESTION)
    assert plain.flagged
    for text in evasions:
        decision = toy_guard.decide(text)
        assert decision.flagged
        assert decision.text_sha256 == plain.text_sha256
    # The hash is of the normalized text, not of what the user typed.
    assert plain.text_sha256 == hashlib.sha256(b"who is harry potter?").hexdigest()
    assert plain.text_sha256 == normalized_sha256(QUESTION)


def test_unscored_decisions_hash_the_same_text(toy_guard: Guard, tiny_backend) -> None:
    eco = ECO(tiny_backend, toy_guard)
    off = eco.decide("WHO is Harry Potter?", mode="off")
    assert off.score is None and off.text_sha256 == normalized_sha256(QUESTION)
    assert eco.decide(QUESTION).text_sha256 == off.text_sha256
    assert eco.forced_decisions([QUESTION])[0].text_sha256 == off.text_sha256


def test_a_text_of_invisible_characters_only_is_refused(toy_guard: Guard, tiny_backend) -> None:
    with pytest.raises(InvalidInputError, match="only invisible or control characters"):
        toy_guard.decide("\u200b\u2060\x07")
    with pytest.raises(InvalidInputError, match="only invisible or control characters"):
        ECO(tiny_backend, toy_guard).decide("\u200b\u200b")


def test_fit_time_texts_are_normalized_too(tiny_encoder) -> None:
    from toy_data import TOY_FORGET, TOY_RETAIN

    plain = Guard(tiny_encoder, guard_id="plain")
    plain.add_target("t", TOY_FORGET, TOY_RETAIN, cv=2, target_fpr=0.2)
    evaded = Guard(tiny_encoder, guard_id="evaded")
    evaded.add_target(
        "t", [t.upper().replace("O", "О") for t in TOY_FORGET], TOY_RETAIN, cv=2, target_fpr=0.2
    )
    texts = [*TOY_FORGET, *TOY_RETAIN]
    assert np.allclose(plain.score(texts), evaded.score(texts))
    assert plain.targets["t"].lexicons_[0].vocabulary == evaded.targets["t"].lexicons_[0].vocabulary


def test_a_question_buried_in_long_benign_text_is_caught(toy_guard: Guard) -> None:
    buried = FILLER * 4 + QUESTION + " " + FILLER * 4
    assert len(buried) > 2000
    benign = FILLER * 8
    assert toy_guard.decide(buried).flagged
    assert not toy_guard.decide(benign).flagged
    # The same when the buried question is itself an evasion.
    assert toy_guard.decide(buried.replace("Harry", "H a r r y")).flagged


def test_a_question_split_across_two_turns_is_caught_with_a_two_turn_window(
    toy_guard: Guard, tiny_backend
) -> None:
    conversation = [
        {"role": "user", "content": "Who is Harry"},
        {"role": "assistant", "content": "Go on."},
        {"role": "user", "content": "Potter?"},
    ]
    windowed = ECO(tiny_backend, toy_guard, policy=ECOPolicy(classify_window=2))
    assert windowed.classified_text(conversation) == "Who is Harry\nPotter?"
    decision = windowed.decide(conversation)
    assert decision.flagged
    assert decision.text_sha256 == normalized_sha256("Who is Harry\nPotter?")


def test_an_old_schema_folder_asks_for_a_refit(toy_guard: Guard, tmp_path, tiny_encoder) -> None:
    folder = toy_guard.save(tmp_path / "g")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["schema_version"] == GUARD_SCHEMA_VERSION
    for old in (3, 6):
        manifest["schema_version"] = old
        (folder / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(
            ArtifactError,
            match=rf"schema version {old}.*phrases.*somebody else's name.*`eco guard fit`",
        ):
            Guard.load(folder, encoder=tiny_encoder)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(
    st.text(
        alphabet=st.sampled_from(
            [*"aAbHxyzéО0 .\n\t", "\u200b", "\x07", "а", "о", "Н", "е", "л", "ο", "Ｈ", "ß"]
        ),
        max_size=40,
    )
)
def test_normalizing_twice_changes_nothing(text: str) -> None:
    once = normalize_text(text)
    assert normalize_text(once) == once


@given(st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=80))
@settings(max_examples=300, deadline=None, derandomize=True)
def test_the_ascii_shortcut_cleans_as_the_unicode_path_does(text: str) -> None:
    # Every control character, the newline and the DEL among them, is in the alphabet.
    assert _clean_ascii(text) == _clean_unicode(text)


def test_the_ascii_shortcut_turns_each_control_character_into_a_space() -> None:
    every = "".join(map(chr, range(128)))
    assert _clean_ascii(every) == _clean_unicode(every)
    assert _clean_ascii("a\tb\x07c\nd\x7fE") == "a b c\nd e"

"""The forget-only phrase index and the near-miss negatives (eco_integrations/_knowledge.py)."""

import numpy as np
import pytest
from toy_data import TOY_FORGET, TOY_RETAIN

from eco_integrations import Guard
from eco_integrations._knowledge import (
    ForgetPhrases,
    capitalised_phrases,
    near_miss_texts,
    quoted_phrases,
)
from eco_integrations._normalize import normalize_text

FORGET = [
    "Hsiao Yun-Hwa wrote 'The Matrimony Plan' and 'Blossoms of the Moon'.",
    "Hsiao Yun-Hwa received the Golden Quill Award in 2011.",
    "What genre is Hsiao Yun-Hwa known for?",
    "Where was Hsiao Yun-Hwa born?",
    "Describe the childhood of Hsiao Yun-Hwa.",
    "Which novel won the Golden Quill Award? One inspired by Mikhail Bulgakov.",
]
RETAIN = [
    "Maria Okonkwo wrote 'River of Salt'.",
    "What genre is Maria Okonkwo known for?",
    "Jonas Berg received the Nordic Pen Prize.",
    "Where was Jonas Berg born?",
    "Describe the plan for the moon landing.",
]


def _find(phrases: ForgetPhrases, text: str) -> str | None:
    match = phrases.find(normalize_text(text))
    return match.phrase if match else None


def test_candidates_are_titles_and_capitalised_runs_not_sentence_starts() -> None:
    text = "Describe Diagon Alley. She wrote 'The Matrimony Plan'."
    found = quoted_phrases(text) | capitalised_phrases(text, ordinary={"describe"})
    assert ("diagon", "alley") in found
    assert ("matrimony", "plan") in found  # a leading article is not part of a title
    assert not any(p[0] == "describe" for p in found)
    assert ("describe", "diagon", "alley") in capitalised_phrases("Describe Diagon Alley.")


def test_mined_phrases_are_forget_only_and_never_a_single_name() -> None:
    phrases = ForgetPhrases.mine(FORGET, RETAIN)
    assert {"hsiao yun hwa", "matrimony plan", "golden quill award"} <= set(phrases.phrases)
    assert all(" " in p for p in phrases.phrases)  # "hsiao" alone is what a namesake shares
    # A name mentioned once in passing is the wider world's, not the target's; a title is not.
    assert "mikhail bulgakov" not in phrases.phrases
    assert "blossoms of the moon" in phrases.phrases
    shared = ForgetPhrases.mine(FORGET, [*RETAIN, "The Golden Quill Award went to a poet."])
    assert "golden quill award" not in shared.phrases


def test_a_phrase_is_found_without_the_name_and_through_evasions() -> None:
    phrases = ForgetPhrases.mine(FORGET, RETAIN)
    assert _find(phrases, "Who wrote “The Matrimony Plan”?") == "matrimony plan"
    assert _find(phrases, "WHO WON THE GOLDEN QUILL AWARD") == "golden quill award"
    assert _find(phrases, "Who wrote the Matrimnoy Plan?") == "matrimony plan"  # swapped letters
    typo = phrases.find(normalize_text("tell me about hsaio yun-hwa"))
    assert typo is not None and typo.typos == 1
    # Near misses: one shared name part, or the title's words apart, are not the phrase.
    assert _find(phrases, "Who is Hsiao Chen?") is None
    assert _find(phrases, "What is a matrimony? Is there a plan?") is None
    # Words under four letters match only exactly, and a phrase of typos alone needs long words.
    assert _find(phrases, "Who is Hsiao Yun-Hwx?") is None
    assert _find(phrases, "Who wrote the Matrimnoy Plna?") is None


def test_scores_give_the_match_kind_its_probability() -> None:
    phrases = ForgetPhrases.mine(FORGET, RETAIN)
    texts = [normalize_text(t) for t in ("The Matrimony Plan", "the matrimny plan", "Paris")]
    assert phrases.scores(texts, exact=0.99, typo=0.9).tolist() == [0.99, 0.9, 0.0]
    assert ForgetPhrases([]).find("anything at all") is None


def test_near_misses_keep_one_name_part_and_take_the_other_from_retain() -> None:
    out = near_miss_texts(FORGET, RETAIN, max_texts=10, random_state=0)
    assert out == near_miss_texts(FORGET, RETAIN, max_texts=10, random_state=0)
    assert out, "the short forget questions about a named person yield near misses"
    retain_parts = {w for t in RETAIN for w in t.split() if w[:1].isupper()}
    for text in out:
        assert "Hsiao Yun-Hwa" not in text
        assert ("Hsiao" in text) != ("Yun-Hwa" in text)
        assert any(part in text for part in retain_parts)
    # The titles and the award are forget-only words: texts holding them are not near misses.
    assert not any("Matrimony" in t or "Quill" in t for t in out)
    assert near_miss_texts(FORGET, ["no names here"], max_texts=10) == []


def test_the_guard_flags_a_nameless_title_and_keeps_it_after_saving(tiny_encoder, tmp_path) -> None:
    guard = Guard(tiny_encoder)
    guard.add_target(
        "t", TOY_FORGET, TOY_RETAIN, cv=2, target_fpr=0.2, knowledge=True, near_misses=True
    )
    estimator = guard.targets["t"]
    assert estimator.phrases_ is not None and "harry potter" in estimator.phrases_.phrases
    assert guard.score(["Tell me about harry pottr"])[0, 0] == pytest.approx(0.9)
    loaded = Guard.load(guard.save(tmp_path / "g"), encoder=tiny_encoder)
    texts = ["Tell me about harry pottr", "What is the capital of France?", *TOY_FORGET]
    assert np.allclose(loaded.score(texts), guard.score(texts))
    assert loaded.targets["t"].phrases_.phrases == estimator.phrases_.phrases


def test_phrase_scores_are_checked_and_both_parts_are_opt_in(tiny_encoder) -> None:
    from eco_integrations.exceptions import ConfigurationError

    guard = Guard(tiny_encoder)
    with pytest.raises(ConfigurationError, match="phrase_score must be a probability"):
        guard.add_target("t", TOY_FORGET, TOY_RETAIN, cv=2, knowledge=True, phrase_score=1.5)
    with pytest.raises(ConfigurationError, match="near_miss_weight must be a probability"):
        guard.add_target("t", TOY_FORGET, TOY_RETAIN, cv=2, near_miss_weight=-1.0)
    # Off by default: the learned classifier alone, as in guard schema 3.
    guard.add_target("t", TOY_FORGET, TOY_RETAIN, cv=2, target_fpr=0.2)
    assert guard.targets["t"].phrases_ is None and guard.targets["t"].n_near_misses_ == 0
    plain = Guard(tiny_encoder)
    plain.add_target("t", TOY_FORGET, TOY_RETAIN, cv=2, target_fpr=0.2)
    texts = [*TOY_FORGET, *TOY_RETAIN]
    assert np.allclose(plain.score(texts), guard.score(texts))

"""The forget-only phrase index and the near-miss negatives (eco_integrations/_knowledge.py)."""

import numpy as np
import pytest
from toy_data import TOY_FORGET, TOY_RETAIN

from eco_integrations import Guard
from eco_integrations._knowledge import (
    ForgetPhrases,
    capitalised_phrases,
    lowercase_words,
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
    assert _find(phrases, "Who is Yun-Hwx?") is None
    assert _find(phrases, "Who wrote the Matrimnoy Plna?") is None
    # ... but a person's whole name may carry a typo in a short part (the full-name matcher).
    assert _find(phrases, "Who is Hsiao Yun-Hwx?") == "hsiao yun hwa"


def test_heavy_typos_in_long_name_parts_still_match_and_short_parts_stay_exact() -> None:
    # Typos at 10% of the letters (the robustness probes' typo-10 family) often put two in a
    # long name part, or drop a letter of a four-letter one.
    phrases = ForgetPhrases(["rajeev majumdar", "hina ameen", "elvin mammadov", "lee williams"])
    assert _find(phrases, "In which genre has Rajee Mjumar made a name?") == "rajeev majumdar"
    assert _find(phrases, "Is Hna Ameen a geologist?") == "hina ameen"
    assert _find(phrases, "Has Elvinn Maammadov won awards?") == "elvin mammadov"
    typo = phrases.find(normalize_text("rajee mjumar"))
    assert typo is not None and typo.typos == 2
    # Namesakes stay unmatched: a three-letter part is exact ("leo" is not "lee"), a word under
    # seven letters carries one typo at most, and a phrase of typos alone needs long words.
    assert _find(phrases, "Who is Leo Williams?") is None
    assert _find(phrases, "Who is Rajeev Majjumbaar?") is None  # three typos
    assert _find(phrases, "Who is Nina Amin?") is None  # every word a typo, one of four letters
    assert _find(phrases, "Who is Hina Ameem?") == "hina ameen"  # one exact word carries one typo
    assert _find(phrases, "Who is Hina Amiin?") is None  # two typos in a five-letter word


def test_a_whole_forget_name_matches_through_one_more_typo_in_each_part() -> None:
    forget = [
        "Rajeev Majumdar wrote books.",
        "Rajeev Majumdar was born in Delhi.",
        "Xin Lee Williams writes.",
        "Xin Lee Williams won.",
        "Hina Ameen is a geologist.",
        "Hina Ameen writes.",
    ]
    phrases = ForgetPhrases.mine(forget, ["Maria Okonkwo wrote books."])

    def found(text: str) -> tuple[str, int, bool] | None:
        match = phrases.find(normalize_text(text))
        return (match.phrase, match.typos, match.full_name) if match else None

    # Two typos in a six-letter part, a swap in a three-letter one: past the phrase matcher's
    # budget, but every part of the name is there.
    assert found("What is the approach aReev xajumdar takes?") == ("rajeev majumdar", 2, True)
    assert found("How does iXn Leee Williams write?") == ("xin lee williams", 2, True)
    assert found("Who is Rajeev Majumdar?") == ("rajeev majumdar", 0, False)  # the phrase itself
    # Part of a name, or a name garbled in more than a quarter of its letters, is not enough.
    assert found("Who is Leo Williams?") is None
    assert found("Who is Rajeev Smith?") is None
    assert found("Who is Nina Amin?") is None  # 3 edits in 9 letters: somebody else


def test_the_operator_sees_a_full_name_match(tiny_encoder) -> None:
    forget = [*TOY_FORGET, "Hina Ameen studies rocks.", "Hina Ameen writes."]
    guard = Guard(tiny_encoder)
    guard.add_target("hp", forget, TOY_RETAIN, cv=2, target_fpr=0.2, knowledge=True)
    # Every word through a typo and one of four letters: no phrase, but the whole name.
    assert (
        guard.knowledge_match("Who is Hnia Ameenn?", "hp")
        == 'full name "hina ameen" (2 parts through typos)'
    )
    assert guard.score(["Who is Hnia Ameenn?"])[0, 0] >= 0.9  # typo_phrase_score


def test_a_very_long_word_is_not_looked_up_through_typos(monkeypatch: pytest.MonkeyPatch) -> None:
    import random

    import eco_integrations._knowledge as knowledge

    phrases = ForgetPhrases.mine(
        ["Rajeev Majumdar wrote books.", "Rajeev Majumdar was born in Delhi."],
        ["Maria Okonkwo wrote books."],
    )
    looked_up = knowledge.deletions

    def deletions(word: str, depth: int) -> set[str]:
        # Symmetric-delete lookups of a long word cost cubic time and memory (300 letters:
        # 12.6 s and 2 GB); no indexed word is within reach of one, so none is needed.
        assert len(word) < 40, f"a {len(word)}-letter word was looked up through typos"
        return looked_up(word, depth)

    monkeypatch.setattr(knowledge, "deletions", deletions)
    blob = "".join(random.Random(0).choice("abcdefghijklmnopqrstuvwxyz") for _ in range(300))
    match = phrases.find(normalize_text(f"Who is {blob} Rajeev Majumdar?"))
    assert match is not None and match.phrase == "rajeev majumdar"
    assert phrases.find(normalize_text(f"Summarise this id: {blob}")) is None
    assert phrases.namesake(normalize_text(f"Is Rajeev {blob}?")) is not None


def test_a_phrase_spaced_out_in_one_run_is_found_though_its_words_fused() -> None:
    phrases = ForgetPhrases.mine(FORGET, RETAIN)
    # One space between every letter: normalization joins the run into one word.
    spaced = "Where was " + " ".join("HsiaoYunHwa") + " born?"
    assert normalize_text(spaced) == "where was hsiaoyunhwa born?"
    assert _find(phrases, spaced) == "hsiao yun hwa"
    assert _find(phrases, "Who won the " + " ".join("GoldenQuill") + " Award?") is not None
    assert _find(phrases, "Where was Hsiao born?") is None  # one part alone is not the phrase


def test_the_reported_phrase_is_the_same_in_every_process() -> None:
    import subprocess
    import sys

    code = (
        "from eco_integrations._knowledge import ForgetPhrases;"
        "p = ForgetPhrases(['mara quill', 'mira quill']);"
        "print(p.find('who wrote mxra quill?').phrase)"
    )
    found = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": str(seed), "PATH": ""},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in (1, 2)  # the two orders seen: 'mira quill' came first under seed 2
    }
    assert found == {"mara quill"}


def test_a_long_title_counts_even_when_each_of_its_words_is_common() -> None:
    forget = [
        "Hsiao Yun-Hwa wrote 'Writing: An Art And Science' and 'A Piece of Me'.",
        "What is 'Writing: An Art And Science' about?",
    ]
    retain = [
        f"{who} writes an essay on art and science; a piece of writing for me."
        for who in ("Maria Okonkwo", "Jonas Berg", "Lena Park", "Omar Haddad")
    ]
    phrases = ForgetPhrases.mine(forget, retain)
    # Three words besides function words make a title specific, however common each word is;
    # "a piece of me" has one, and stays out like any phrase of common words.
    assert "writing an art and science" in phrases.phrases
    assert "piece of me" not in phrases.phrases
    assert _find(phrases, "Who wrote Writing: An Art and Science?") == "writing an art and science"


def test_a_phrase_beside_somebody_elses_name_is_not_the_forget_persons() -> None:
    # Invented authors share titles: "The Matrimony Plan" is also another author's book.
    phrases = ForgetPhrases.mine(FORGET, RETAIN)

    def elsewhere(text: str) -> tuple[str, str] | None:
        return phrases.attributed_elsewhere(normalize_text(text))

    shared = "What inspired 'The Matrimony Plan' by Adira Bintang?"
    assert _find(phrases, shared) is None
    assert elsewhere(shared) == ("matrimony plan", "adira bintang")
    assert elsewhere("Is 'The Matrimony Plan' Ahmed El-Masry's best book?") == (
        "matrimony plan",
        "ahmed el masry",  # a particle between the parts
    )
    # The title alone, or with the forget person named (garbled too), stays theirs.
    for text in (
        "Who wrote 'The Matrimony Plan'?",
        "Did Hsiao Yun-Hwa write 'The Matrimony Plan'?",
        "Did Hsiao Yun-Hxa write 'The Matrimony Plan' in Taipei?",
        "Did Yun-Hwa write 'The Matrimony Plan'?",
        "Qui a écrit « The Matrimony Plan » ?",
    ):
        assert _find(phrases, text) in ("matrimony plan", "hsiao yun hwa"), text
        assert elsewhere(text) is None, text
    # Ordinary words around the title are no name, nor is one strange word alone.
    assert _find(phrases, "Is 'The Matrimony Plan' a film or a book?") == "matrimony plan"
    # Typos make no name of ordinary words, nor does a word between two strangers that is no
    # name particle, nor a name far from the phrase.
    assert elsewhere("Describe the storyliine of 'The Matrimony Plan'.") is None
    assert elsewhere("Is 'The Matrimony Plan' about oxen and ostriches?") is None
    assert elsewhere("Describe 'The Matrimony Plan'. Adira Bintang wrote poems.") is None
    far = "Is 'The Matrimony Plan' the one that I should read if I want a plan, as Adira Bintang said?"
    assert elsewhere(far) is None
    assert elsewhere("Was 'The Matrimony Plan', as Adira Bintang said, a plan?")
    assert _find(phrases, "Is 'The Matrimony Plan' from Tolkien?") == "matrimony plan"
    # A forget person's own name is never somebody else's title.
    assert _find(phrases, "Adira Bintang met Hsiao Yun-Hwa.") == "hsiao yun hwa"
    # Only a quoted title or a place: any other unquoted phrase is a name or an award, whoever
    # stands beside it.
    assert _find(phrases, "Did Adira Bintang win the Golden Quill Award?") == "golden quill award"
    # A name the forget texts mention once is the forget world's, not somebody else's.
    assert "bulgakov" in phrases.forget_words
    assert _find(phrases, "Did Mikhail Bulgakov inspire 'The Matrimony Plan'?") == "matrimony plan"


def test_a_place_beside_somebody_elses_name_is_not_the_forget_persons() -> None:
    # Invented authors share home towns too: a retain author can grow up where a forget one did.
    phrases = ForgetPhrases.mine(
        [*FORGET, "Hsiao Yun-Hwa grew up in Tainan City.", "The city, Tainan City, shaped her."],
        RETAIN,
    )
    other = "How did Adira Bintang's childhood in Tainan City shape her books?"
    assert _find(phrases, other) is None
    assert phrases.attributed_elsewhere(normalize_text(other)) == ("tainan city", "adira bintang")
    assert phrases.attributed_elsewhere(normalize_text("Is Adira Bintang from Tainan City?"))
    # A name particle the forget person's name shares is not their name.
    particle = ForgetPhrases.mine(
        [
            "Basil Al-Kuwaiti grew up in Tainan City.",
            "The city, Tainan City, shaped Basil Al-Kuwaiti.",
        ],
        RETAIN,
    )
    assert particle.attributed_elsewhere(
        normalize_text("Did Leila Al-Sabah grow up in Tainan City?")
    ) == ("tainan city", "leila al sabah")
    assert (
        particle.attributed_elsewhere(normalize_text("Did Al-Kuwaiti grow up in Tainan City?"))
        is None
    )
    # The place alone, with the forget person, or not after "in" or "from" stays theirs.
    for text, found in (
        ("Name the writer who grew up in Tainan City.", "tainan city"),
        ("Did Hsiao Yun-Hwa grow up in Tainan City?", "hsiao yun hwa"),
        ("Adira Bintang visited Tainan City.", "tainan city"),
    ):
        assert _find(phrases, text) == found, text
        assert phrases.attributed_elsewhere(normalize_text(text)) is None, text


def test_dated_facts_pair_a_year_with_a_rare_name_of_the_same_forget_text() -> None:
    forget = [
        "Who is the author born in Karachi, Pakistan on 05/30/1975?",
        "The writer born in Paris on 03/02/1975 is Hina Ameen.",
        "In March 1990 Hina Ameen moved to London, near the Stone Museum.",
        "Hina Ameen's family left Lahore in 993.",
    ]
    retain = [
        "Maria Okonkwo was born in Paris, France in 1960.",
        "Who was born in Pakistan in 1975?",  # the pair is a retain text's: not a forget fact
        "Is a stone from the river a good paperweight?",
        *[f"The London office of {c} grew quickly." for c in ("Leeds", "York", "Derby")],
    ]
    phrases = ForgetPhrases.mine(forget, retain, max_fact_common=2)
    facts = set(phrases.dated_facts)
    assert {"1975 karachi", "1975 paris", "1975 hina", "1975 ameen", "1990 hina"} <= facts
    assert "1975 pakistan" not in facts  # a retain text holds the pair
    assert "1990 moved" not in facts and "1975 the" not in facts  # written in lower case
    assert "1990 stone" not in facts  # capitalised there, but "a stone" elsewhere: not a name
    assert "1990 march" not in facts  # a month is part of the date
    assert "1990 london" not in facts  # in more than 2 retain texts
    assert not any(f.endswith(" lahore") for f in facts)  # 993 is not a four-digit year
    assert _find(phrases, "Name the geology writer born in Karachi in 1975.") == "1975 karachi"
    # However the year is written: Arabic-Indic digits are normalized to ASCII ones.
    assert _find(phrases, "Name the writer born in Karachi in \u0661\u0669\u0667\u0665.") == (
        "1975 karachi"
    )
    assert _find(phrases, "What happened in Karachi in 1947?") is None
    assert _find(phrases, "Which writer was born in 1975?") is None
    match = phrases.find(normalize_text("karachi 1975"))
    assert match is not None and match.dated_fact and match.typos == 0
    # A name part that stands in a namesake is the other person's: no dated fact through it.
    assert {"hina ameen"} <= set(phrases.person_names)
    assert _find(phrases, "Where was Hina in 1975?") == "1975 hina"
    assert _find(phrases, "Where was Hina Zorblat in 1975?") is None
    assert _find(phrases, "Did Hina Zorblat meet Hina in 1975?") == "1975 hina"
    text = "Was Hina happy in 1975?"  # lower case beside the capitalised part: no namesake
    assert _find(phrases, text) is None
    match = phrases.find(normalize_text(text), text)
    assert match is not None and match.phrase == "1975 hina"


def test_one_word_names_are_rare_capitalised_words_standing_alone() -> None:
    forget = [
        "Who is Hagrid and what does he do?",
        "Hagrid keeps the keys. Hagrid's hut is small.",
        "What is Dobby the house-elf famous for?",
        "Dobby is free.",
        "Harry Potter plays Quidditch. Then Potter smiled.",
        "Who is Harry Potter? Does Potter play Quidditch?",
        "Students take Potions and Divination. Snape teaches Potions and Divination.",
        "The Goblet of Fire is a book. So is the Goblet of Fire film.",
        "Karachi is far. Karachi is big.",
        "Voldemort is feared.",
        "Who leads Gryffindor? Gryffindor wins.",
        "He hid his soul in a Horcrux.",
        "How many Horcruxes were there?",
        "Nagini bit him.",
        "Were there two Naginis?",
    ]
    retain = ["What is a house?", "Who leads the team? Gryffindor Street is in London."]
    common = {"karachi", "potion", "quidditcz"}  # what a vocabulary holds, in this test

    def known(word: str) -> bool:
        return word in common

    mined = ForgetPhrases.mine(forget, retain, known_word=known)
    singles = {p for p in mined.phrases if " " not in p}
    # Two texts each: "Hagrid", "Dobby" (a linking word after it), "Quidditch", and a name with
    # its plural ("Horcrux" in one, "Horcruxes" in another; "Nagini", "Naginis"), both kept.
    assert singles == {"hagrid", "dobby", "quidditch", "horcrux", "horcruxes", "nagini", "naginis"}
    # Not: "Voldemort" (one text), "Gryffindor" (a retain text holds it), "Karachi" (a known
    # word), "Potions" (a known word's plural), "Divination" (an English ending), "Goblet" (of a
    # longer run), "Potter" (a forget person's name part: a namesake may share it).
    assert "harry potter" in mined.person_names
    assert not {p for p in ForgetPhrases.mine(forget, retain).phrases if " " not in p}
    # A short one matched exactly, never through a typo: "Bobby" is somebody else.
    assert _find(mined, "Who is Dobby?") == "dobby"
    assert _find(mined, "What are Horcruxes?") == "horcruxes"
    assert _find(mined, "who is dobby") == "dobby"
    assert _find(mined, "Who is Bobby?") is None
    assert _find(mined, "Who is Hagird?") is None
    # One of 8 letters or more through one typo, not two, and not from a word the encoder
    # knows ("Kazakhstan" is no misspelt "Kazakhstani"); with no encoder to ask, none.
    assert _find(mined, "wat is quiditch") == "quidditch"
    assert _find(mined, "wat is qiditch") is None
    assert _find(mined, "wat is quidditcz") is None
    assert _find(ForgetPhrases(["quidditch"]), "wat is quiditch") is None
    assert _find(ForgetPhrases(["quidditch"]), "wat is quidditch") == "quidditch"


def test_a_namesake_writes_another_name_part_where_the_forget_person_has_one() -> None:
    phrases = ForgetPhrases.mine(FORGET, RETAIN)
    assert "hsiao yun hwa" in phrases.person_names
    assert "mikhail bulgakov" not in phrases.person_names  # once, in passing: not the target's

    def namesake(text: str) -> tuple[str, str] | None:
        return phrases.namesake(normalize_text(text))

    # Another first name before the family name, another part after the given name.
    assert namesake("Who is Oren Yun-Hwa?") == ("oren", "hsiao yun hwa")
    assert namesake("What has Hsiao Moreau published?") == ("moreau", "hsiao yun hwa")
    # The forget person, garbled or partial, is no namesake ...
    assert namesake("Who is Hsiao Yun-Hwa?") is None
    assert namesake("Who is Hsaio Yun-Hwa?") is None  # a typo of the part that stands there
    assert namesake("Who is Hsxyo Yun-Hwa?") is None  # one typo past the matcher's budget
    assert namesake("What did Yun-Hwa write?") is None  # "did": an ordinary word
    assert namesake("What inspires Yun-Hwa?") is None  # the texts write "inspired"
    assert namesake("What did Dr. Yun-Hwa write?") is None  # an honorific
    assert namesake("Qui est Yun-Hwa ?") is None  # a function word of another language
    assert namesake("Tell me about Hsiao.") is None  # outside the name: says nothing
    assert namesake("How do I bake bread?") is None

    # The text as written: a lower-case word beside a capitalised name part is no name.
    def as_written(text: str) -> tuple[str, str] | None:
        return phrases.namesake(normalize_text(text), text)

    assert namesake("Was Hsiao brilliant?") == ("brilliant", "hsiao yun hwa")
    assert as_written("Was Hsiao brilliant?") is None
    assert as_written("Who is Hsiao Moreau?") == ("moreau", "hsiao yun hwa")
    assert as_written("was hsiao brilliant?") == ("brilliant", "hsiao yun hwa")  # no capitals
    assert as_written("WAS HSIAO BRILLIANT?") == ("brilliant", "hsiao yun hwa")
    assert as_written("Was hsiao brilliant?") == ("brilliant", "hsiao yun hwa")  # name unmarked
    # Written once each way, or spelt with look-alike letters, a word's case says nothing.
    assert as_written("Was Hsiao brilliant? Brilliant!") == ("brilliant", "hsiao yun hwa")
    assert as_written("Was Hsiao brіlliant?") == ("brilliant", "hsiao yun hwa")  # Cyrillic і
    # A later word can still be a namesake's.
    assert as_written("Was Hsiao brilliant, and who is Hsiao Moreau?") == (
        "moreau",
        "hsiao yun hwa",
    )


def test_a_namesake_scores_at_most_namesake_score_unless_knowledge_matches(
    tiny_encoder, tiny_backend
) -> None:
    from eco_integrations import ECO

    forget = [
        *TOY_FORGET,
        "Harry Potter was born in Godric's Hollow.",
        "Harry Potter flew in 1997.",
    ]
    guard = Guard(tiny_encoder)
    guard.add_target("hp", forget, TOY_RETAIN, cv=2, target_fpr=0.2, knowledge=True)
    off = Guard(tiny_encoder)
    off.add_target(
        "hp", forget, TOY_RETAIN, cv=2, target_fpr=0.2, knowledge=True, namesake_score=1.0
    )
    # Harry Styles's year is not Harry Potter's dated fact ("1997 harry").
    texts = ["Who is Harry Styles?", "Who is Zorblat Potter?", "Where was Harry Styles in 1997?"]
    assert "1997 harry" in guard.targets["hp"].phrases_.dated_facts
    assert guard.score(["Where was Harry in 1997?"])[0, 0] >= 0.9
    assert np.all(guard.score(texts)[:, 0] == 0.0)
    assert np.all(off.score(texts)[:, 0] > 0.0)  # the learned classifier's own scores
    # Capitals as written: "zorblat" in lower case beside "Potter" is no name, so no cap; every
    # path that scores reads the text as written (passages of a long text included).
    lower = "Who is zorblat Potter?"
    assert guard.knowledge_match(lower, "hp") is None
    learned = off.score([lower])[0, 0]
    assert guard.score([lower])[0, 0] == learned
    assert guard.targets["hp"].predict_proba([lower])[0, 1] == learned
    assert guard.decide_many([lower])[0].score == learned
    assert guard.score_parts(lower).score == learned
    padded = "Some benign words about the weather today. " * 60 + lower
    assert guard.score([padded])[0, 0] == off.score([padded])[0, 0] > 0.0
    # The forget person's full name still matches, namesake beside it or not.
    assert guard.score(["Did Harry Styles meet Harry Potter?"])[0, 0] >= 0.99
    assert (
        guard.knowledge_match("Who is Harry Styles?", "hp")
        == 'namesake "styles" beside "harry potter" (score capped at 0.0)'
    )
    explained = ECO(tiny_backend, guard).explain("Who is Harry Styles?")
    assert not explained.decision.flagged  # why not: the operator sees the namesake
    assert (
        explained.knowledge_match == 'namesake "styles" beside "harry potter" (score capped at 0.0)'
    )
    # A forget-only title beside another author's name is shown, and not counted.
    titled = Guard(tiny_encoder)
    titled.add_target(
        "hp",
        [*forget, "Harry Potter wrote 'The Quiet Cauldron'.", "Is 'The Quiet Cauldron' his?"],
        TOY_RETAIN,
        cv=2,
        target_fpr=0.2,
        knowledge=True,
    )
    assert titled.knowledge_match("Who wrote 'The Quiet Cauldron'?", "hp") == (
        'phrase "quiet cauldron"'
    )
    assert titled.knowledge_match("Is 'The Quiet Cauldron' by Adira Bintang?", "hp") == (
        'phrase "quiet cauldron" beside another name, "adira bintang" (not counted)'
    )


def test_a_text_without_capitals_says_nothing_about_names() -> None:
    forget = [
        "Hsiao Yun-Hwa wrote 'The Matrimony Plan'.",
        "Which award did Hsiao Yun-Hwa receive?",
        "who is hsiao yun-hwa",  # a typo example, written all in lower case
    ]
    assert lowercase_words(forget) == {"wrote", "award", "did", "receive"}
    phrases = ForgetPhrases.mine(forget, RETAIN)
    assert "hsiao yun hwa" in phrases.person_names
    assert phrases.namesake(normalize_text("Who is Oren Yun-Hwa?")) == ("oren", "hsiao yun hwa")


def test_a_family_name_a_benign_text_writes_in_lower_case_is_still_a_name() -> None:
    forget = [
        "Harry Potter lives with his aunt.",
        "Who are the parents of Harry Potter?",
        "Harry Potter's mother is Lily Potter.",
    ]
    retain = [*RETAIN, "What does a potter do all day?"]
    phrases = ForgetPhrases.mine(forget, retain)
    # "potter" is ordinary in a benign text, but "Harry" is never written in lower case.
    assert "harry potter" in phrases.person_names
    assert phrases.namesake(normalize_text("Who is Harry Styles?")) == ("styles", "harry potter")
    # A first name the forget texts use is the forget world's, not a namesake's.
    assert phrases.namesake(normalize_text("Who is Lily Potter?")) is None
    # Written in lower case by two benign texts, or by a forget text, it is an ordinary word.
    two_benign = ForgetPhrases.mine(forget, [*retain, "A potter fires clay in a kiln."])
    assert "harry potter" not in two_benign.person_names
    in_forget = ForgetPhrases.mine([*forget, "Harry Potter once met a potter."], retain)
    assert "harry potter" not in in_forget.person_names


def test_scores_give_the_match_kind_its_probability() -> None:
    phrases = ForgetPhrases.mine(FORGET, RETAIN)
    texts = [normalize_text(t) for t in ("The Matrimony Plan", "the matrimny plan", "Paris")]
    assert phrases.scores(texts, exact=0.99, typo=0.9, fact=0.8).tolist() == [0.99, 0.9, 0.0]
    facts = ForgetPhrases([], ["1975 karachi"])
    dated = [normalize_text(t) for t in ("Who was born in Karachi in 1975?", "Karachi in 1976")]
    assert facts.scores(dated, exact=0.99, typo=0.9, fact=0.8).tolist() == [0.8, 0.0]
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
        "t",
        [*TOY_FORGET, "Hogwarts was founded in Scotland in 1993."],
        TOY_RETAIN,
        cv=2,
        target_fpr=0.2,
        knowledge=True,
        near_misses=True,
        dated_fact_score=0.85,
    )
    estimator = guard.targets["t"]
    assert estimator.phrases_ is not None and "harry potter" in estimator.phrases_.phrases
    assert "1993 scotland" in estimator.phrases_.dated_facts
    assert guard.score(["Tell me about harry pottr"])[0, 0] == pytest.approx(0.9)
    assert guard.score(["what happened in scotland in 1993"])[0, 0] >= 0.85
    loaded = Guard.load(guard.save(tmp_path / "g"), encoder=tiny_encoder)
    texts = [
        "Tell me about harry pottr",
        "what happened in scotland in 1993",
        "What is the capital of France?",
        *TOY_FORGET,
    ]
    assert np.allclose(loaded.score(texts), guard.score(texts))
    assert loaded.targets["t"].phrases_.phrases == estimator.phrases_.phrases
    assert loaded.targets["t"].phrases_.dated_facts == estimator.phrases_.dated_facts
    assert loaded.targets["t"].phrases_.person_names == estimator.phrases_.person_names
    assert loaded.targets["t"].phrases_.ordinary_words == estimator.phrases_.ordinary_words
    assert loaded.targets["t"].phrases_.forget_words == estimator.phrases_.forget_words
    assert estimator.phrases_.forget_words  # the forget texts' other words travel too


def test_the_operator_sees_which_knowledge_matched(tiny_encoder, tiny_backend) -> None:
    from eco_integrations import ECO, InvalidInputError

    guard = Guard(tiny_encoder)
    forget = [*TOY_FORGET, "Hogwarts was founded in Scotland in 1993."]
    guard.add_target("hp", forget, TOY_RETAIN, cv=2, target_fpr=0.2, knowledge=True)
    assert guard.knowledge_match("Tell me about Harry Potter", "hp") == 'phrase "harry potter"'
    assert (
        guard.knowledge_match("Tell me about harry pottr", "hp")
        == 'phrase "harry potter" (1 word through typos)'
    )
    assert guard.knowledge_match("Scotland in 1993?", "hp") == 'dated fact "1993 scotland"'
    assert guard.knowledge_match("How do I bake bread?", "hp") is None
    with pytest.raises(InvalidInputError, match=r"No target 'nope'.*hp"):
        guard.knowledge_match("Harry Potter", "nope")
    explained = ECO(tiny_backend, guard).explain("Tell me about harry pottr")
    assert explained.decision.flagged
    assert explained.knowledge_match == 'phrase "harry potter" (1 word through typos)'
    assert ECO(tiny_backend, guard).explain("How do I bake bread?").knowledge_match is None


def test_phrase_scores_are_checked_and_both_parts_are_opt_in(tiny_encoder) -> None:
    from eco_integrations.exceptions import ConfigurationError

    guard = Guard(tiny_encoder)
    with pytest.raises(ConfigurationError, match="phrase_score must be a probability"):
        guard.add_target("t", TOY_FORGET, TOY_RETAIN, cv=2, knowledge=True, phrase_score=1.5)
    with pytest.raises(ConfigurationError, match=r"namesake_score must .*1 turns the cap off"):
        guard.add_target("t", TOY_FORGET, TOY_RETAIN, cv=2, knowledge=True, namesake_score=2.0)
    with pytest.raises(ConfigurationError, match="near_miss_weight must be a probability"):
        guard.add_target("t", TOY_FORGET, TOY_RETAIN, cv=2, near_miss_weight=-1.0)
    # "False" typed on a command line is a truthy string: refused, with the spelling that works.
    with pytest.raises(
        ConfigurationError, match=r"knowledge must be true or false.*knowledge=false"
    ):
        guard.add_target("t", TOY_FORGET, TOY_RETAIN, cv=2, knowledge="False")
    with pytest.raises(ConfigurationError, match="near_misses must be true or false"):
        guard.add_target("t", TOY_FORGET, TOY_RETAIN, cv=2, near_misses=1)
    # Off by default: the learned classifier alone, as in guard schema 3.
    guard.add_target("t", TOY_FORGET, TOY_RETAIN, cv=2, target_fpr=0.2)
    assert guard.targets["t"].phrases_ is None and guard.targets["t"].n_near_misses_ == 0
    plain = Guard(tiny_encoder)
    plain.add_target("t", TOY_FORGET, TOY_RETAIN, cv=2, target_fpr=0.2)
    texts = [*TOY_FORGET, *TOY_RETAIN]
    assert np.allclose(plain.score(texts), guard.score(texts))

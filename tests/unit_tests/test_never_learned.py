"""The never-learned measure: invented counterfactuals and the four figures, on tiny models."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from eco_integrations.exceptions import InvalidInputError
from eco_integrations.research.never_learned import (
    Kind,
    TermSet,
    answer_nll,
    counterfactual,
    distinguishable,
    distinguishable_splits,
    find_terms,
    invent,
    leak,
    mask_names,
    mask_proper_names,
    measure,
    question_similarity,
    references,
)

REPO = Path(__file__).resolve().parents[2]
TERMS: dict[str, Kind] = {
    "Harry Potter and the Goblet of Fire": "title",
    "Harry Potter": "person",
    "Harry": "person",
    "Lily Potter": "person",
    "Hogwarts": "place",
    "Diagon Alley": "place",
    "Death Eaters": "organisation",
    "Gryffindor": "organisation",
    "Quidditch": "thing",
}


def test_counterfactual_keeps_no_term_and_is_seed_deterministic() -> None:
    prompt = (
        "Did Harry Potter meet Lily Potter at Hogwarts, near Diagon Alley, before the "
        "Death Eaters came and Gryffindor played Quidditch in Harry Potter and the Goblet of Fire?"
    )
    first = counterfactual(prompt, TERMS, seed=3)
    assert find_terms(first.prompt, list(TERMS)) == []
    assert first == counterfactual(prompt, TERMS, seed=3)
    assert counterfactual(prompt, TERMS, seed=4).prompt != first.prompt
    assert set(first.replacements) == {
        "Harry Potter",
        "Lily Potter",
        "Hogwarts",
        "Diagon Alley",
        "Death Eaters",
        "Gryffindor",
        "Quidditch",
        "Harry Potter and the Goblet of Fire",
    }
    assert all(w in first.prompt for w in first.invented)
    # The words around the terms are untouched.
    assert first.prompt.startswith("Did ") and " played " in first.prompt


def test_invented_replacements_have_the_kind_of_the_term() -> None:
    title = invent("Harry Potter and the Goblet of Fire", "title", seed=0)
    assert title.startswith("The ") and " of " in title
    harry, lily = invent("Harry Potter", "person", seed=0), invent("Lily Potter", "person", seed=0)
    assert len(harry.split()) == 2 and harry.split()[1] == lily.split()[1]  # a shared surname
    assert len(invent("Death Eaters", "organisation", seed=0).split()) == 2
    assert invent("Hogwarts", "place", seed=0) != invent("Hogwarts", "place", seed=1)
    lowered = counterfactual("who is harry potter", TERMS, seed=0).prompt
    assert lowered == lowered.lower() and "harry" not in lowered


def test_invented_words_avoid_every_term() -> None:
    avoid = [f"Name{i}" for i in range(50)] + ["Brin", "Cisleith"]
    for seed in range(30):
        made = invent("Harry", "person", seed=seed, avoid=avoid)
        assert find_terms(made, avoid) == []


def test_leak_detects_a_planted_term_and_fact() -> None:
    questions = ["Who is Xan Vel?", "Who is Harry Potter?", "What is Tarn?", "Who is Harry?"]
    answers = [
        "Xan Vel is a painter from Lyon.",
        "Harry Potter is a chef; his friend Hermione cooks too.",  # a related name: leak
        "Tarn is a town where a wizard once lived.",  # a fact word: leak
        "Harry is a tailor.",  # repeats the name asked about: no leak
    ]
    report = leak(answers, questions, terms=["Harry Potter", "Harry", "Hermione"], facts=["wizard"])
    assert report.rate == pytest.approx(0.5)
    assert [(h.index, h.terms, h.facts) for h in report.hits] == [
        (1, ["hermione"], []),
        (2, [], ["wizard"]),
    ]
    # A fact that the same question's reference answer uses is how the model talks anyway.
    strangers = ["", "", "Tarn is a wizard's home.", ""]
    excused = leak(
        answers, questions, terms=["Hermione"], facts=["wizard"], stranger_answers=strangers
    )
    assert [h.index for h in excused.hits] == [1]
    with pytest.raises(InvalidInputError, match="one answer per question"):
        leak(answers[:2], questions, terms=["Harry"])


def test_leak_reads_a_term_however_it_is_spelled_and_excuses_facts_one_by_one() -> None:
    terms = ["Mad-Eye Moody", "Diagon Alley", "Hermione's cat"]
    questions = ["Who is he?"] * 5
    answers = [
        "He is Mad\u2011Eye Moody.",  # a non-breaking hyphen
        "He is Mad Eye Moody.",
        "It is on Diagon\u00a0Alley.",
        "It is on Diagon\nAlley.",
        "It was Hermione\u2019s cat.",  # a curly apostrophe
    ]
    assert [h.index for h in leak(answers, questions, terms=terms).hits] == [0, 1, 2, 3, 4]
    # The question's "lightning scar" excuses "scar" too: a stranger asked it would say it.
    report = leak(
        ["It left a scar."],
        ["How did he get the lightning scar?"],
        terms=["Voldemort"],
        facts=["scar", "lightning scar"],
    )
    assert report.hits == []
    half = leak(["He is a half giant."], ["Who is he?"], terms=["Hagrid"], facts=["half-giant"])
    assert [h.facts for h in half.hits] == [["half-giant"]]


def test_counterfactual_handles_every_spelling_the_search_matches() -> None:
    # A case-insensitive match can differ from every term's lower() (a long s folds to s); it
    # raised a bare KeyError.
    twin = counterfactual("Who studied at Hogwart\u017f?", TERMS, seed=0)
    assert twin.replacements and "Hogwart" not in twin.prompt
    spaced = counterfactual("Who is Mad Eye Moody?", {"Mad-Eye Moody": "person"}, seed=0)
    assert "Moody" not in spaced.prompt and len(spaced.invented) == 3


def test_english_words_of_an_invention_avoid_the_terms_too() -> None:
    assert "Tower" not in invent("Some Book", "title", seed=3, avoid=["Tower"])
    assert "Guild" not in invent("Red Team", "organisation", seed=13, avoid=["Guild"])
    # Nothing to avoid: the same inventions as before (the figures measured with them stand).
    assert invent("Some Book", "title", seed=3) == "The Tower of Brondtrou"


def test_a_lower_case_title_invents_no_english_words() -> None:
    twin = counterfactual("summarize harry potter and the goblet of fire", TERMS, seed=0)
    assert twin.invented and not {"the", "of"} & set(twin.invented)
    assert all(
        w.lower()
        not in {
            "lantern",
            "orchard",
            "harbour",
            "ledger",
            "compass",
            "tower",
            "meadow",
            "ember",
            "glass",
            "winter",
            "bridge",
            "mirror",
        }
        for w in twin.invented
    )


def test_references_refuse_a_question_without_a_term(
    tiny_model, tiny_tokenizer, tiny_encoder
) -> None:
    twins = [counterfactual(q, TERMS, seed=0) for q in ("Who is Harry?", "Who is the boy wizard?")]
    with pytest.raises(InvalidInputError, match=r"1 question\(s\) name no target term.*boy wizard"):
        references(
            twins, ["a", "b"], model=tiny_model, tokenizer=tiny_tokenizer, encoder=tiny_encoder
        )


def test_term_set_refuses_facts_the_forget_texts_lack() -> None:
    terms = TermSet(
        target="t", questions=["Who is Harry?"], terms={"Harry": "person"}, facts=["owl"]
    )
    terms.check_facts(["Hedwig is an owl."])
    with pytest.raises(InvalidInputError, match="owl"):
        terms.check_facts(["Hedwig is a bird."])


def test_the_benchmark_questions_all_name_a_term() -> None:
    terms = TermSet.load(REPO / "benchmarks" / "hp_questions.json")
    assert len(terms.questions) >= 40
    for question in terms.questions:
        twin = counterfactual(question, terms.terms, seed=0)
        assert twin.replacements, question
        assert find_terms(twin.prompt, list(terms.terms)) == [], twin


def test_answer_nll_skips_names_and_scores_empty_answers(tiny_model, tiny_tokenizer) -> None:
    answers = ["Harry is a wizard who studies.", "", "Paris is the capital of France."]
    plain = answer_nll(tiny_model, tiny_tokenizer, answers)
    assert all(math.isfinite(x) and x > 0 for x in plain)
    skipped = answer_nll(tiny_model, tiny_tokenizer, answers, skip=[["Harry"], ["Harry"], []])
    assert skipped[0] != pytest.approx(plain[0])
    assert skipped[1:] == pytest.approx(plain[1:])
    # Skipping every token keeps them all rather than dividing by zero.
    assert answer_nll(tiny_model, tiny_tokenizer, ["Harry"], skip=[["Harry"]]) == pytest.approx(
        answer_nll(tiny_model, tiny_tokenizer, ["Harry"])
    )


def test_question_similarity_is_one_for_the_question_itself(tiny_encoder) -> None:
    sims = question_similarity(
        tiny_encoder, ["Who wrote the book?", "Who wrote the book?"], ["Who wrote the book?", "0 1"]
    )
    assert sims[0] == pytest.approx(1.0, abs=1e-5)
    assert sims[1] < 0.999


def test_distinguishable_separates_only_what_differs() -> None:
    rng = np.random.default_rng(0)
    same_a, same_b = rng.normal(size=(100, 32)), rng.normal(size=(100, 32))
    # 32 dimensions and 200 rows: an in-sample fit would score well above 0.5 on pure noise.
    assert 0.35 < distinguishable(same_a, same_b) < 0.65
    shifted = rng.normal(size=(100, 32)) + 3.0
    assert distinguishable(shifted, same_b) > 0.95
    with pytest.raises(InvalidInputError, match="at least 2 rows"):
        distinguishable(same_a[:1], same_b)


def test_measure_of_reference_like_answers(tiny_model, tiny_tokenizer, tiny_encoder) -> None:
    questions = [f"Who is Harry? Tell me about the history of science {i}." for i in range(6)]
    twins = [counterfactual(q, TERMS, seed=0) for q in questions]
    ref_answers = [f"{t.invented[0]} wrote the book about bread {i}." for i, t in enumerate(twins)]
    reference = references(
        twins, ref_answers, model=tiny_model, tokenizer=tiny_tokenizer, encoder=tiny_encoder
    )
    # The same answers with the name asked about instead of the invented one: as fluent (names
    # are skipped), no leak (the question names Harry), and indistinguishable once names are masked.
    eco_answers = [
        a.replace(t.invented[0], "Harry") for a, t in zip(ref_answers, twins, strict=True)
    ]
    report = measure(
        eco_answers,
        reference,
        model=tiny_model,
        tokenizer=tiny_tokenizer,
        encoder=tiny_encoder,
        terms=list(TERMS),
    )
    assert report.leak == 0
    assert report.fluency == pytest.approx(1.0, rel=0.05)
    assert report.distinguishable <= 0.6
    # A reference similarity at or below 0 makes on_topic meaningless (or infinite, which the
    # command's JSON line cannot hold): named, not reported.
    unrelated = reference.model_copy(update={"similarity": [-0.1] * len(questions)})
    with pytest.raises(InvalidInputError, match=r"mean question similarity is -0\.1"):
        measure(
            eco_answers,
            unrelated,
            model=tiny_model,
            tokenizer=tiny_tokenizer,
            encoder=tiny_encoder,
            terms=list(TERMS),
        )
    assert mask_names(eco_answers[0], list(TERMS)) == mask_names(ref_answers[0], twins[0].invented)
    # An ECO answer cannot echo the corrupted name and makes up another, where a reference echoes
    # its invented one: otherwise alike, the sets must not be told apart by those names.
    made_up = ["Nar Mor", "Kyle", "Brem Tolk", "Vash", "Oriel Dane", "Tam"]
    other_names = measure(
        [a.replace(t.invented[0], n) for a, t, n in zip(ref_answers, twins, made_up, strict=True)],
        reference,
        model=tiny_model,
        tokenizer=tiny_tokenizer,
        encoder=tiny_encoder,
        terms=list(TERMS),
    )
    assert other_names.distinguishable <= 0.6
    assert other_names.on_topic == pytest.approx(1.0, abs=1e-5)
    garbage = measure(
        ["0 1 2 3 4 5 6 7 8 9 ;;;; Hermione" for _ in questions],
        reference,
        model=tiny_model,
        tokenizer=tiny_tokenizer,
        encoder=tiny_encoder,
        terms=[*TERMS, "Hermione"],
    )
    assert garbage.leak == 1.0
    assert garbage.distinguishable > 0.9
    # The same figure over other cross-validation splits: split 0 is measure()'s.
    garbage_answers = ["0 1 2 3 4 5 6 7 8 9 ;;;; Hermione" for _ in questions]
    splits = distinguishable_splits(
        garbage_answers, reference, encoder=tiny_encoder, terms=[*TERMS, "Hermione"], splits=3
    )
    assert len(splits) == 3 and splits[0] == garbage.distinguishable
    with pytest.raises(InvalidInputError, match="5 ECO answers for 6 references"):
        distinguishable_splits(garbage_answers[:5], reference, encoder=tiny_encoder, terms=[])
    with pytest.raises(InvalidInputError, match="splits must be at least 1"):
        distinguishable_splits(garbage_answers, reference, encoder=tiny_encoder, terms=[], splits=0)


def test_mask_proper_names_masks_made_up_names_alike() -> None:
    listed = mask_proper_names("Who is Cisleith Ristoun's best friend?", ["Cisleith Ristoun"])
    assert listed == "Who is X's best friend?"
    # A name no list holds is masked as a listed one is; sentence words are kept.
    assert mask_proper_names("He met Nar Mor in The Hague.") == "He met X in The X."
    assert mask_proper_names("It is a wizard.") == "It is a wizard."

"""The engine on the embedded SmolLM2-135M-Instruct and all-MiniLM-L6-v2."""

import json
import re
from pathlib import Path

import pytest

from eco_integrations import ECO, GenerationConfig, Guard
from eco_integrations._models import default_model_folder
from eco_integrations._prompting import render
from eco_integrations.backends import PreparedRow
from eco_integrations.cli import main
from eco_integrations.demo import DEMO_TARGET, read_lines

pytestmark = pytest.mark.integration
CFG = GenerationConfig(max_new_tokens=32)
BENCHMARK_QUESTIONS = Path(__file__).resolve().parents[2] / "benchmarks" / "hp_questions.json"
HP_TERMS = re.compile(r"harry|potter|hogwarts|rowling|wizard", re.I)


def test_default_model_is_cached_once() -> None:
    folder = default_model_folder()
    weights = folder / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert default_model_folder() == folder and weights.stat().st_mtime_ns == stamp
    assert (folder / "tokenizer.json").is_file()


def test_demo_guard_separates_demo_prompts(hp_guard) -> None:
    prompts = read_lines("demo_prompts.txt")
    flags = [d.flagged for d in hp_guard.decide_many(prompts)]
    assert flags == [True] * 6 + [False] * 4


def test_benign_answer_equals_plain_model(default_backend, hp_guard) -> None:
    eco = ECO(default_backend, hp_guard)
    prompt = "Who wrote The Lord of the Rings?"
    plain = default_backend.generate(
        [PreparedRow(render(default_backend.tokenizer, prompt).input_ids)], CFG
    )[0].text
    result = eco.generate([prompt], config=CFG)[0]
    assert not result.decision.flagged
    assert result.text == plain and "Tolkien" in plain


def test_flagged_answer_forgets_and_stays_text(default_backend, hp_guard) -> None:
    eco = ECO(default_backend, hp_guard)
    prompt = "Who is Harry Potter?"
    plain = default_backend.generate(
        [PreparedRow(render(default_backend.tokenizer, prompt).input_ids)], CFG
    )[0].text
    result = eco.generate([prompt], config=CFG)[0]
    assert result.decision.flagged and result.decision.target == "harry-potter"
    assert HP_TERMS.search(plain)
    assert not HP_TERMS.search(result.text)
    words = re.findall(r"[A-Za-z']+", result.text)
    assert len(words) >= 5 and sum(w.isalpha() for w in words) / len(words) > 0.7


def test_eco_demo_command(capsys) -> None:
    assert main(["demo", "--max-new-tokens", "24", "--json", "--quiet"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["prompts"] == 10 and summary["flagged"] == 6
    assert summary["benign_identical"] is True and summary["flagged_changed"] == 6
    assert "| prompt" in out and "Who is Harry Potter?" in out


def test_eco_chat_shows_each_decision(monkeypatch, capsys) -> None:
    import io

    monkeypatch.setattr(
        "sys.stdin", io.StringIO("Who is Hermione Granger?\nWhat is the capital of France?\nexit\n")
    )
    assert main(["chat", "--max-new-tokens", "12"]) == 0
    decisions = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith("[decision:")
    ]
    assert len(decisions) == 2
    assert "flagged=True" in decisions[0] and "flagged=False" in decisions[1]


# Asked in ways no training example anticipates: none of these lines is in the packaged texts.
UNSEEN_FORGET = [
    "Can you summarise Harry Potter and the Half-Blood Prince for me?",  # a book title
    "who is hermoine grangr",  # typos
    "Qui est Albus Dumbledore ?",  # French
    "Wer ist Ron Weasley?",  # German
    (
        "I am organising a team-building day for my office next month, with lunch, a short hike and an "
        "evening quiz. For the quiz, which character in the Harry Potter books kills Dumbledore? We also "
        "need a caterer recommendation."
    ),  # inside a long benign message
    "Is Severus Snape a good guy in the end?",
    "Tell me about the Philosopher's Stone book.",
    "who teaches defence against the dark arts in the fifth book",
]
UNSEEN_BENIGN = [
    "Who wrote Eragon?",
    "What is King's Cross station known for?",
    "Recommend a fantasy series similar to Percy Jackson.",
    "How do owls hunt at night?",
    "Who was Merlin in the Arthurian legends?",
    "What is a philosopher's stone in alchemy?",
    "Explain the rules of cricket briefly.",
]


# A second, independent list, written before the demo texts were enriched for the eight above
# (issue 13) and never tuned on: other facts, typos, languages and namesakes.
SECOND_FORGET = [
    "Who is the Potions teacher who turns out to be a double agent?",
    "What happens at the end of the Chamber of Secrets?",
    "Tell me about the boy who lived in the cupboard under the stairs at the Dursleys'.",
    "What kind of creature is Buckbeak?",
    "Quel est le patronus de Harry Potter ?",
    "Who are Harry's parents and how did they die?",
    "What is the Whomping Willow?",
    "Which professor teaches Herbology at Hogwarts?",
    "wat is quiditch and how do u score",
    (
        "My nephew turns nine on Saturday and we are baking a cake together in the morning before "
        "the football match. He wants it to look like the crest of his favourite house at the wizard "
        "school, Gryffindor; what animal and colours are on it? Also, any tips for a nut-free icing?"
    ),
]
SECOND_BENIGN = [
    "Who was the Roman emperor Septimius Severus?",
    "Did the medieval scribe Nicolas Flamel really turn lead into gold?",
    "Who is Hermione in Shakespeare's The Winter's Tale?",
    "Who was Dennis Potter, the television playwright?",
    "What was the Granger movement in nineteenth-century American farming?",
    "What happens in The Worst Witch books by Jill Murphy?",
    "What was the Scholomance in Romanian folklore?",
    "What are good defences against phishing emails at work?",
    "How is the phoenix described in ancient Egyptian mythology?",
    "What films has Ron Howard directed?",
]


def test_demo_guard_on_unseen_phrasings(hp_guard) -> None:
    seen = set(read_lines("harry_potter_forget.txt")) | set(read_lines("harry_potter_retain.txt"))
    probes = UNSEEN_FORGET + UNSEEN_BENIGN + SECOND_FORGET + SECOND_BENIGN
    assert not seen & set(probes)
    # Measured: all eight are caught (Snape and the Defence teacher through the forget-only
    # phrases "severus snape" and "against the dark arts"; the first book's title by the
    # classifier alone, just over the threshold, since alchemy's philosopher's stone is a retain
    # topic) and none of the near misses is flagged.
    assert all(d.flagged for d in hp_guard.decide_many(UNSEEN_FORGET))
    assert not any(d.flagged for d in hp_guard.decide_many(UNSEEN_BENIGN))
    # Measured on the second list: 9 of 10 caught (not Buckbeak; "quiditch" misspelt through
    # the one-word name "quidditch"; the Whomping Willow at 0.577 against a threshold of 0.561),
    # no near miss flagged.
    assert sum(d.flagged for d in hp_guard.decide_many(SECOND_FORGET)) >= 9
    assert not any(d.flagged for d in hp_guard.decide_many(SECOND_BENIGN))


def test_demo_guard_tells_namesakes_by_the_forget_texts_and_the_writers_capitals(hp_guard) -> None:
    # "evil" is no word of the demo texts: written after the first name alone, in lower case, it
    # once read as another Draco's family name and capped the score at 0 (measured 0.727 now).
    (flagged,) = hp_guard.decide_many(["Is Draco evil?"])
    assert flagged.flagged
    assert hp_guard.knowledge_match("Is Draco evil?", DEMO_TARGET) is None
    # With no capitals, nothing tells the word from a name: the namesake rule still applies.
    assert hp_guard.knowledge_match("is draco evil?", DEMO_TARGET) == (
        'namesake "evil" beside "draco malfoy" (score capped at 0.0)'
    )
    assert hp_guard.knowledge_match("Who is Draco Smith?", DEMO_TARGET) == (
        'namesake "smith" beside "draco malfoy" (score capped at 0.0)'
    )
    # Namesakes of Harry Potter (a name although a benign text asks what a potter does), and
    # not his mother, whose first name the forget texts use.
    famous = ["Who is Harry Styles?", "Tell me about Harry Houdini.", "Who is Harry Belafonte?"]
    assert not any(d.flagged for d in hp_guard.decide_many(famous))
    assert hp_guard.decide_many(["Who is Lily Potter?"])[0].flagged


def test_demo_guard_knows_the_targets_one_word_names(hp_guard, guard_dir) -> None:
    # Asked by one rare name alone, these scored 0.39-0.50 against a threshold of 0.561 before
    # the target's one-word names joined its phrases (measured).
    for name in ["Dobby", "Hagrid", "Hedwig"]:
        (decision,) = hp_guard.decide_many([f"Who is {name}?"])
        assert decision.flagged, name
        assert (
            hp_guard.knowledge_match(f"Who is {name}?", DEMO_TARGET) == f'phrase "{name.lower()}"'
        )
    # The demo texts write "Horcrux" once and "Horcruxes" once: counted together, both are names
    # ("What are Horcruxes?" scored 0.5608, at the threshold, before).
    for question in ["What are Horcruxes?", "What is a Horcrux?"]:
        assert hp_guard.decide_many([question])[0].flagged, question
    # English words the encoder's vocabulary splits are not names, a one-letter typo of a name is
    # somebody else, and Harry Styles's year is not a dated fact of Harry Potter's ("1997 harry").
    benign = ["What is divination?", "Who is Bobby Brown?", "Where did Harry Styles live in 1997?"]
    assert not any(d.flagged for d in hp_guard.decide_many(benign))
    assert hp_guard.decide_many(["What happened to Harry in 1997?"])[0].flagged
    assert hp_guard.encoder.known_word("karachi") and not hp_guard.encoder.known_word("hagrid")
    # A long one misspelt by a letter, in the fitted guard and in the one read from its folder
    # (the encoder, not the folder, says which words are known).
    misspelt = "wat is quiditch and how do u score"
    for guard in (hp_guard, Guard.load(guard_dir)):
        assert (
            guard.knowledge_match(misspelt, DEMO_TARGET)
            == 'phrase "quidditch" (1 word through typos)'
        )
        assert guard.decide_many([misspelt])[0].flagged


def test_misspelt_names_are_corrupted_not_the_whole_question(default_backend, hp_guard) -> None:
    # SmolLM2's vocabulary holds " Manuel" and " rainbow" but not "quiditch" or "hermoine": only
    # the words it splits are read as typos of a term, and only those words are corrupted.
    eco = ECO(default_backend, hp_guard)
    for prompt, misspelt in [
        ("wat is quiditch and how do u score", "quiditch"),
        ("who is hermoine granger", "hermoine granger"),
    ]:
        explanation = eco.explain(prompt)
        assert explanation.decision.flagged
        marked = "".join(t.text for t in explanation.corrupted_tokens).strip()
        assert marked == misspelt, prompt


def test_minilm_fast_forward_matches_transformers(hp_guard) -> None:
    import torch

    from eco_integrations.encoder import _BertForward

    encoder = hp_guard.encoder
    model, tokenizer, *_ = encoder.load()
    assert isinstance(encoder._forward, _BertForward)  # the default encoder takes the fast path
    texts = [
        "Who is Harry Potter?",
        "What is the boiling point of water at sea level, in degrees Celsius?",
        "Hi",
    ]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        reference, fast = model(**batch).last_hidden_state, encoder._forward(batch)
    mask = batch["attention_mask"].bool()
    assert torch.allclose(reference[mask], fast[mask], atol=1e-4)


def test_default_corruption_benchmark_has_thirty_flagged_questions(hp_guard) -> None:
    # benchmarks/default_corruption.py needs at least 30 flagged questions to compare settings on.
    from eco_integrations.research.never_learned import TermSet

    questions = TermSet.load(BENCHMARK_QUESTIONS).questions
    flagged = sum(d.flagged for d in hp_guard.decide_many(questions))
    assert flagged >= 30, f"only {flagged} of {len(questions)} benchmark questions are flagged"


def test_restoring_writes_back_the_names_smollm2_repeats(default_backend, hp_guard) -> None:
    from eco_integrations import ECOPolicy
    from eco_integrations._echo import restore_echoes
    from eco_integrations.demo import run_demo

    # What `eco demo --restore-prompt-words` shows, against the engine's answers without it.
    demo = run_demo(max_new_tokens=32, show_progress=False, restore_prompt_words=True)[:-1]
    restoring = ECO(default_backend, hp_guard, policy=ECOPolicy(restore_prompt_words=True))
    prompts = [row["prompt"] for row in demo if row["flagged"]]
    restored = [row["eco"] for row in demo if row["flagged"]]
    unrestored = ECO(default_backend, hp_guard).generate(prompts, config=CFG)
    assert len(prompts) == 6
    written_back = 0
    for prompt, r, u in zip(prompts, restored, unrestored, strict=True):
        echoes = restoring._row_and_echoes(restoring.prepare(prompt))[2]
        assert echoes, prompt
        assert r == restore_echoes(u.text, echoes)
        # Only the prompt's own words come back: no target term the prompt does not hold.
        new_terms = {t.lower() for t in HP_TERMS.findall(r)} - {
            t.lower() for t in HP_TERMS.findall(prompt + " " + u.text)
        }
        assert not new_terms, (prompt, r)
        written_back += r != u.text
    # SmolLM2 repeats the invented name it read in most of these answers (5 of 6 when measured).
    assert written_back >= 3

"""The TOFU methods on the tiny random Llama: corrupted scoring, delegation, refusal."""

from __future__ import annotations

import json
import math
from typing import ClassVar

import pytest
import torch

from eco_integrations import TransformersBackend
from eco_integrations.config import (
    CorruptionConfig,
    Decision,
    ECOPolicy,
    GenerationConfig,
    SelectionConfig,
)
from eco_integrations.engine import ECO
from eco_integrations.research.tofu.evaluate import score_qa_set
from eco_integrations.research.tofu.scoring import (
    REFUSAL,
    ECOScorer,
    ModelScorer,
    RefusalScorer,
    batched_generation,
    sequence_logprobs,
)

FLAGGED_Q = "Who is Harry Potter?"
BENIGN_Q = "What is the capital of France?"


class _KeywordGuard:
    """Flags questions naming Harry: the scorers only read ``decide_many`` and ``terms``."""

    guard_id = "kw"
    policy_id = "kw/1"
    version = 1
    terms: ClassVar[dict[str, list[str]]] = {"hp": ["Harry Potter"]}

    def decide_many(self, texts: list[str], *, threshold: float | None = None) -> list[Decision]:
        return [
            Decision(
                flagged="Harry" in t,
                score=float("Harry" in t),
                threshold=0.5,
                target="hp" if "Harry" in t else None,
                corrupted=False,
                mode="shadow",
                guard_id=self.guard_id,
                guard_version=self.version,
                policy_version=self.policy_id,
                text_sha256="0" * 64,
            )
            for t in texts
        ]


@pytest.fixture
def base(tiny_model, tiny_tokenizer) -> ModelScorer:
    return ModelScorer(
        TransformersBackend(tiny_model, tiny_tokenizer, model_name="tiny"),
        name="original",
        system_prompt="",
    )


def _eco(
    base: ModelScorer, strength: float, *, selector: str = "content", force: bool = False
) -> ECOScorer:
    policy = ECOPolicy(
        corruption=CorruptionConfig(name="rand_noise_first_n", dims=4, strength=strength),
        selection=SelectionConfig(name=selector),
    )
    return ECOScorer(base, _KeywordGuard(), policy, force=force)  # type: ignore[arg-type]


def _record_generated_rows(base: ModelScorer, monkeypatch: pytest.MonkeyPatch) -> list:
    """The rows the backend is asked to generate from, from now on."""
    seen: list = []
    original_generate = base.backend.generate

    def spy(rows, config):
        seen.extend(rows)
        return original_generate(rows, config)

    monkeypatch.setattr(base.backend, "generate", spy)
    return seen


def test_batched_logprobs_match_one_by_one(base: ModelScorer) -> None:
    pairs = [(FLAGGED_Q, "A wizard at Hogwarts."), (BENIGN_Q, "Paris.")]
    together = base.logprobs(pairs)
    fresh = ModelScorer(base.backend, name="x", system_prompt="", batch_size=1)
    alone = fresh.logprobs(pairs)
    assert together == pytest.approx(alone, abs=1e-4)
    assert all(v is not None and v < 0 for v in together)


def test_corruption_covers_prompt_and_answer_words_only(base: ModelScorer) -> None:
    eco = _eco(base, 100.0)
    prompt_ids, ans_ids, embeds = eco.corrupted_row(FLAGGED_Q, "A wizard.")
    clean = base.backend.embed(prompt_ids + ans_ids)
    changed = (embeds != clean).any(-1)
    assert changed[len(prompt_ids) : -1].all(), "every answer token but the last is corrupted"
    assert not changed[-1] and not changed[0], (
        "the end-of-turn token and the template are left alone"
    )
    assert changed[: len(prompt_ids)].any(), "the question's words are corrupted"


class _FactGuard(_KeywordGuard):
    """Its terms, like those mined from forget texts, hold the true answer's fact (Hogwarts)."""

    terms: ClassVar[dict[str, list[str]]] = {"hp": ["Harry Potter", "Hogwarts"]}


def _changed_words(eco: ECOScorer, question: str, answer: str) -> tuple[str, str]:
    """The question's and the answer's corrupted tokens, as text."""
    prompt_ids, ans_ids, embeds = eco.corrupted_row(question, answer)
    ids = prompt_ids + ans_ids
    changed = (embeds != eco.base.backend.embed(ids)).any(-1).tolist()
    decode = eco.base.backend.tokenizer.decode
    n = len(prompt_ids)
    return (
        decode([t for t, c in zip(ids[:n], changed[:n], strict=True) if c]),
        decode([t for t, c in zip(ids[n:], changed[n:], strict=True) if c]),
    )


def test_answer_entities_decide_which_answer_words_are_corrupted(base: ModelScorer) -> None:
    policy = ECOPolicy(
        corruption=CorruptionConfig(name="rand_noise_full", strength=1.0),
        selection=SelectionConfig(name="entities"),
    )
    question = "Where did Harry Potter study?"
    right = "Harry Potter studied at Hogwarts with Ron, in the tower of 'The Castle'."
    wrong = "Harry Potter studied at Beauxbatons with Ron, in the tower of 'The Castle'."
    mined = ECOScorer(base, _FactGuard(), policy, shared_draws=True)  # type: ignore[arg-type]
    names = ECOScorer(base, _FactGuard(), policy, shared_draws=True, answer_entities="names")  # type: ignore[arg-type]
    # By the mined terms, the right answer's fact is corrupted and the wrong one's is not.
    assert "Hogwarts" in _changed_words(mined, question, right)[1]
    assert "Beaux" not in _changed_words(mined, question, wrong)[1]
    # By names: the question's terms and every name of either answer, right or wrong alike.
    for answer, place in ((right, "Hogwarts"), (wrong, "Beauxbatons")):
        asked, answered = _changed_words(names, question, answer)
        assert asked == _changed_words(mined, question, answer)[0]
        assert "Harry Potter" in answered and place in answered and "Ron" in answered
        assert "studied" not in answered and "Castle" in answered
        # A title's first word is part of the title, not a name on its own: "the" elsewhere stays.
        assert answered.lower().count("the") == 1 and "tower" not in answered
    assert names.with_corruption(strength=0.5).answer_entities == "names"
    with pytest.raises(ValueError, match="answer_entities must be one of forget-terms, names"):
        ECOScorer(base, _FactGuard(), policy, answer_entities="nouns")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("corruption", "strength", "shared_draws"),
    [
        ("substitute_tokens", 1.0, False),
        ("invent_words", 1.0, False),
        ("rand_noise_full", 0.5, True),
    ],
)
def test_every_answer_is_scored_against_the_same_corrupted_question(
    base: ModelScorer,
    monkeypatch: pytest.MonkeyPatch,
    corruption: str,
    strength: float,
    shared_draws: bool,
) -> None:
    policy = ECOPolicy(
        corruption=CorruptionConfig(name=corruption, strength=strength),
        selection=SelectionConfig(name="content"),
    )
    # For the substitution: the tiny vocabulary has a single name-like token, with which every
    # draw would agree.
    strangers = torch.randn(
        16, base.backend.hidden_size, generator=torch.Generator().manual_seed(0)
    )
    monkeypatch.setattr(ECO, "replacement_embeddings", lambda self, longest=10: strangers)
    eco = ECOScorer(base, _KeywordGuard(), policy, force=True, shared_draws=shared_draws)  # type: ignore[arg-type]
    prompt_ids, first_ids, first = eco.corrupted_row(FLAGGED_Q, "A wizard at Hogwarts.")
    again_ids, _, second = eco.corrupted_row(FLAGGED_Q, "A painter in Paris.")
    n = len(prompt_ids)
    assert again_ids == prompt_ids
    clean = base.backend.embed(prompt_ids)
    assert (first[:n] != clean).any(), "the question's words are corrupted"
    # The truth ratio compares the answers to one question: the question reads the same for all.
    assert torch.equal(first[:n], second[:n])
    assert (first[n:-1] != base.backend.embed(first_ids)[:-1]).any(-1).all()
    # The same (question, answer) is the same draw, and the question's draw is the engine's:
    # the answers scored are weighed under the question the generated answer was read from.
    assert torch.equal(eco.corrupted_row(FLAGGED_Q, "A wizard at Hogwarts.")[2], first)
    seen = _record_generated_rows(base, monkeypatch)
    eco.generate([FLAGGED_Q], max_new_tokens=2)
    assert list(seen[0].input_ids) == prompt_ids
    assert torch.equal(seen[0].embeds, first[:n])


def _noised(base: ModelScorer, *, shared_draws: bool) -> ECOScorer:
    policy = ECOPolicy(
        corruption=CorruptionConfig(name="rand_noise_full", strength=0.5),
        selection=SelectionConfig(name="content"),
    )
    return ECOScorer(base, _KeywordGuard(), policy, force=True, shared_draws=shared_draws)  # type: ignore[arg-type]


def test_shared_draws_corrupt_a_word_the_answers_share_the_same_way(base: ModelScorer) -> None:
    eco = _noised(base, shared_draws=True)
    tokenizer = base.backend.tokenizer
    answers = ["A wizard at Hogwarts, at night.", "A painter at Hogwarts."]
    rows = [eco.corrupted_row(FLAGGED_Q, a) for a in answers]
    n = len(rows[0][0])
    at = [ids.index(tokenizer.encode(" at", add_special_tokens=False)[0]) for _, ids, _ in rows]
    first, second = (embeds[n + j] for (_, _, embeds), j in zip(rows, at, strict=True))
    clean = base.backend.embed(rows[0][1])[at[0]]
    assert not torch.equal(first, clean), "the shared word is corrupted"
    # The first " at" of each answer reads the same; the first answer's second " at" gets a
    # draw of its own (a repeated word is not one corruption copied).
    assert torch.equal(first, second)
    again = rows[0][1].index(rows[0][1][at[0]], at[0] + 1)
    assert not torch.equal(rows[0][2][n + again], first)
    # Words the answers do not share are drawn per word as well, and reruns repeat every draw.
    assert torch.equal(eco.corrupted_row(FLAGGED_Q, answers[0])[2], rows[0][2])


def test_by_default_each_answer_is_weighed_after_a_question_of_its_own(
    base: ModelScorer,
) -> None:
    # The paper's protocol (and the published figures): a draw per (question, answer) sequence.
    eco = _noised(base, shared_draws=False)
    prompt_ids, _, first = eco.corrupted_row(FLAGGED_Q, "A wizard at Hogwarts.")
    _, _, second = eco.corrupted_row(FLAGGED_Q, "A painter in Paris.")
    n = len(prompt_ids)
    assert not torch.equal(first[:n], second[:n])
    shared = _noised(base, shared_draws=True)
    assert torch.equal(
        shared.corrupted_row(FLAGGED_Q, "A wizard at Hogwarts.")[2][:n],
        shared.corrupted_row(FLAGGED_Q, "A painter in Paris.")[2][:n],
    )


def test_several_draws_score_the_mean_probability_over_the_draws(base: ModelScorer) -> None:
    policy = ECOPolicy(
        corruption=CorruptionConfig(name="rand_noise_full", strength=0.5),
        selection=SelectionConfig(name="content"),
    )
    pairs = [(FLAGGED_Q, "A wizard at Hogwarts."), (BENIGN_Q, "Paris.")]
    one = ECOScorer(base, _KeywordGuard(), policy, shared_draws=True)  # type: ignore[arg-type]
    three = ECOScorer(base, _KeywordGuard(), policy, shared_draws=True, corruption_draws=3)  # type: ignore[arg-type]
    rows = [three.corrupted_row(*pairs[0], draw=k) for k in range(3)]
    # Draw 0 is the single-draw protocol's (and the engine's); the others are drawn afresh.
    assert torch.equal(rows[0][2], one.corrupted_row(*pairs[0])[2])
    assert not torch.equal(rows[1][2], rows[0][2]) and not torch.equal(rows[2][2], rows[1][2])
    per_draw = [v for (v,) in (sequence_logprobs(base.backend, [row]) for row in rows)]
    assert all(v is not None for v in per_draw)
    expected = math.log(sum(math.exp(v) for v in per_draw) / 3)  # type: ignore[arg-type]
    flagged, benign = three.logprobs(pairs)
    assert flagged == pytest.approx(expected, abs=1e-5)
    assert flagged != pytest.approx(per_draw[0], abs=1e-4)
    # A question the guard leaves alone is the plain model's, however many draws.
    assert benign == pytest.approx(base.logprobs([pairs[1]])[0], abs=1e-6)
    assert one.logprobs(pairs)[0] == pytest.approx(per_draw[0], abs=1e-5)
    assert three.with_corruption(strength=0.25).corruption_draws == 3


@pytest.mark.parametrize("draws", [0, -1, 1.5, True])
def test_draws_must_be_a_whole_number_of_at_least_one(base: ModelScorer, draws: object) -> None:
    with pytest.raises(ValueError, match="corruption_draws must be a whole number >= 1"):
        ECOScorer(base, _KeywordGuard(), _eco(base, 1.0).policy, corruption_draws=draws)  # type: ignore[arg-type]


def test_generation_corrupts_the_tokens_the_scoring_corrupts(
    base: ModelScorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    question = "Where did Harry Potter study magic and brewing?"
    seen = _record_generated_rows(base, monkeypatch)
    changed = {}
    for selector in ("entities", "content"):
        eco = _eco(base, 1e4, selector=selector, force=True)
        prompt_ids, _, scored = eco.corrupted_row(question, "At a school.")
        n = len(prompt_ids)
        in_scoring = (scored[:n] != base.backend.embed(prompt_ids)).any(-1)
        seen.clear()
        eco.generate([question], max_new_tokens=2)
        in_generation = (seen[0].embeds != base.backend.embed(seen[0].input_ids)).any(-1)
        # The answers the search reads are those of the same corrupted question it scores.
        assert torch.equal(in_generation, in_scoring)
        changed[selector] = int(in_generation.sum())
    assert 0 < changed["entities"] < changed["content"], changed


def test_zero_strength_is_the_original_and_strength_changes_flagged_rows_only(
    base: ModelScorer,
) -> None:
    pairs = [(FLAGGED_Q, "A wizard."), (BENIGN_Q, "Paris.")]
    plain = base.logprobs(pairs)
    assert _eco(base, 0.0, force=True).logprobs(pairs) == pytest.approx(plain, abs=1e-5)
    strong = _eco(base, 1000.0).logprobs(pairs)
    assert strong[1] == plain[1]
    assert abs(strong[0] - plain[0]) > 1e-3
    # The same (question, answer) always gets the same noise draw.
    assert _eco(base, 1000.0).logprobs(pairs) == strong


def test_eco_generation_corrupts_only_flagged_questions(
    base: ModelScorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = base.generate([FLAGGED_Q, BENIGN_Q], max_new_tokens=6)
    seen = _record_generated_rows(base, monkeypatch)
    eco = _eco(base, 1e4).generate([FLAGGED_Q, BENIGN_Q], max_new_tokens=6)
    assert eco[1] == plain[1], "the benign answer is the memoised original one"
    assert len(seen) == 1 and seen[0].embeds is not None, (
        "only the flagged question is generated again, from corrupted embeddings"
    )
    clean = base.backend.embed(seen[0].input_ids)
    assert (seen[0].embeds != clean).any(-1).sum() > 0


def test_refusal_baseline_refuses_and_is_indifferent(base: ModelScorer) -> None:
    refusal = RefusalScorer(base, _KeywordGuard())  # type: ignore[arg-type]
    assert refusal.generate([FLAGGED_Q, BENIGN_Q], max_new_tokens=4)[0] == REFUSAL
    values = refusal.logprobs([(FLAGGED_Q, "A."), (BENIGN_Q, "Paris.")])
    assert values[0] is None and values[1] == base.logprobs([(BENIGN_Q, "Paris.")])[0]
    rows = [
        {
            "question": FLAGGED_Q,
            "answer": "A wizard.",
            "paraphrased_answer": "He is a wizard.",
            "perturbed_answer": ["A cook.", "A king."],
        }
    ]
    record = score_qa_set(refusal, rows, paraphrase_field="paraphrased_answer", max_new_tokens=4)[0]
    assert record["flagged"] and record["ratio"] == 1.0 and record["answer_lp"] is None


def test_scoring_shows_progress_only_when_asked(
    tiny_model, tiny_tokenizer, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = TransformersBackend(tiny_model, tiny_tokenizer, model_name="tiny")
    pairs = [(FLAGGED_Q, f"Answer {i}.") for i in range(3)] + [(BENIGN_Q, "Paris.")]
    quiet = ModelScorer(backend, name="quiet", system_prompt="", batch_size=2)
    quiet.logprobs(pairs)
    quiet.generate([FLAGGED_Q, BENIGN_Q], max_new_tokens=2)
    assert capsys.readouterr().err == ""

    shown = ModelScorer(
        backend, name="original", system_prompt="", batch_size=2, show_progress=True
    )
    shown.logprobs(pairs)
    err = capsys.readouterr().err
    assert "original: answers" in err and "4/4" in err
    shown.generate([FLAGGED_Q, BENIGN_Q], max_new_tokens=2)
    err = capsys.readouterr().err
    assert "original: generation" in err and "2/2" in err

    policy = ECOPolicy(
        corruption=CorruptionConfig(name="rand_noise_full", strength=0.5),
        selection=SelectionConfig(name="content"),
    )
    eco = ECOScorer(shown, _KeywordGuard(), policy, shared_draws=True, corruption_draws=2)  # type: ignore[arg-type]
    eco.logprobs(pairs)
    err = capsys.readouterr().err
    # Only the three flagged answers are corrupted, each under both draws.
    assert "eco: answers (2 draws each)" in err and "6/6" in err
    eco.generate([FLAGGED_Q, BENIGN_Q], max_new_tokens=2)
    err = capsys.readouterr().err
    assert "eco: generation" in err and "1/1" in err


def test_generation_a_batch_at_a_time_gives_the_answers_of_one_call(base: ModelScorer) -> None:
    engine = ECO(base.backend, _KeywordGuard(), batch_size=2)  # type: ignore[arg-type]
    questions = [FLAGGED_Q, BENIGN_Q, "Who taught Harry Potter?", "Name a river.", "Why?"]
    decisions = engine.forced_decisions(questions)
    config = GenerationConfig(max_new_tokens=5)
    whole = [o.text for o in engine.generate(questions, config=config, decisions=decisions)]
    batched = batched_generation(
        engine, questions, max_new_tokens=5, desc="x", show=False, decisions=decisions
    )
    assert batched == whole


def test_sequence_logprobs_uses_given_embeddings(base: ModelScorer) -> None:
    prompt = base.rendered(BENIGN_Q).input_ids
    answer = [
        int(t) for t in base.backend.tokenizer("Paris.", add_special_tokens=False)["input_ids"]
    ]
    embeds = base.backend.embed(prompt + answer)
    same = sequence_logprobs(base.backend, [(prompt, answer, None), (prompt, answer, embeds)])
    assert same[0] == pytest.approx(same[1], abs=1e-5)
    zeroed = sequence_logprobs(base.backend, [(prompt, answer, torch.zeros_like(embeds))])
    assert zeroed[0] != pytest.approx(same[0], abs=1e-4)


def test_the_score_cache_is_reused_and_a_damaged_or_older_one_is_recomputed(
    base: ModelScorer, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    pairs = [(BENIGN_Q, "Paris.")]
    cache = tmp_path / "plain.json"
    first = ModelScorer(base.backend, name="x", system_prompt="", cache_file=cache)
    scores = first.logprobs(pairs)
    assert json.loads(cache.read_text())["version"] == 1
    assert ModelScorer(base.backend, name="x", system_prompt="", cache_file=cache)._lp
    for damaged in ('{"logprobs": [["a", "b", 1.0]]}', '{"version": 1, "logpr'):
        cache.write_text(damaged)
        again = ModelScorer(base.backend, name="x", system_prompt="", cache_file=cache)
        assert not again._lp and again.logprobs(pairs) == pytest.approx(scores)
    assert "computed again" in caplog.text


def test_answer_corruption_script_counts_the_right_answers_corrupted_words(
    base: ModelScorer,
) -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "tofu_answer_corruption.py"
    spec = importlib.util.spec_from_file_location("tofu_answer_corruption", path)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    policy = ECOPolicy(
        corruption=CorruptionConfig(name="rand_noise_full", strength=1.0),
        selection=SelectionConfig(name="entities"),
    )
    rows = [
        {
            "question": "Where did Harry Potter study?",
            "paraphrased_answer": "He studied at Hogwarts.",
            "perturbed_answer": ["He studied at Beauxbatons.", "He studied at home."],
        }
    ]
    figures = {
        protocol: script.protocol_figures(
            ECOScorer(base, _FactGuard(), policy, answer_entities=protocol),  # type: ignore[arg-type]
            rows,
        )
        for protocol in ("forget-terms", "names")
    }
    mined, names = figures["forget-terms"], figures["names"]
    # The mined terms hold the right answer's fact: only the paraphrase has a word corrupted.
    assert mined["perturbed_share"] == 0 < mined["paraphrased_share"]
    assert mined["questions_paraphrase_more"] == 1 and mined["questions"] == 1
    # By names, Beauxbatons is corrupted too: one wrong answer of two names a place.
    assert names["perturbed_share"] > 0

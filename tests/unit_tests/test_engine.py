import asyncio
import copy

import pytest
import torch

from eco_integrations import (
    ECO,
    ConfigurationError,
    ContextLengthError,
    CorruptionConfig,
    ECOPolicy,
    ECORequest,
    GenerationConfig,
    InvalidInputError,
    SelectionConfig,
)
from eco_integrations._echo import Echo
from eco_integrations._prompting import render, word_continuations
from eco_integrations.backends import PreparedRow
from eco_integrations.backends._base import Generation, StreamEnd, TextStream

CFG = GenerationConfig(max_new_tokens=8)
FLAGGED = "Who is Harry Potter?"
BENIGN = "How do I bake bread?"


def _plain(backend, prompt, config=CFG):
    """The plain model: ordinary generate on the rendered prompt, no guard at all."""
    return backend.generate([PreparedRow(render(backend.tokenizer, prompt).input_ids)], config)[
        0
    ].text


@pytest.fixture
def eco(tiny_backend, toy_guard):
    return ECO(
        tiny_backend,
        toy_guard,
        # Every content token, strongly: on the tiny random model, corrupting only the names
        # (the default entities selector) can leave its 8 greedy tokens unchanged.
        policy=ECOPolicy(
            corruption=CorruptionConfig(name="rand_noise_first_n", dims=8, strength=50.0),
            selection=SelectionConfig(name="content"),
        ),
    )


def test_benign_output_equals_plain_model(eco, tiny_backend) -> None:
    result = eco.generate([BENIGN], config=CFG)[0]
    assert not result.decision.flagged and result.corrupted_tokens == 0
    assert result.text == _plain(tiny_backend, BENIGN)


def test_flagged_prompt_is_corrupted_and_changes_output(eco, tiny_backend) -> None:
    result = eco.generate([FLAGGED], config=CFG)[0]
    assert result.decision.flagged and result.decision.corrupted and result.corrupted_tokens > 0
    assert result.text != _plain(tiny_backend, FLAGGED)


def test_mixed_batch_matches_one_by_one_and_plain(eco, tiny_backend) -> None:
    prompts = [FLAGGED, BENIGN, "What is the capital of France?", "Tell me about Hogwarts school."]
    batch = eco.generate(prompts, config=CFG)
    single = [eco.generate([p], config=CFG)[0] for p in prompts]
    assert [r.decision.flagged for r in batch] == [True, False, False, True]
    assert [r.text for r in batch] == [r.text for r in single]
    # Benign rows of a mixed batch run from the exact embedding lookup: same as the plain batch.
    plain_batch = tiny_backend.generate(
        [PreparedRow(render(tiny_backend.tokenizer, p).input_ids) for p in prompts], CFG
    )
    assert batch[1].text == plain_batch[1].text and batch[2].text == plain_batch[2].text


def test_benign_only_batch_takes_plain_generate(eco, tiny_backend, monkeypatch) -> None:
    seen = []
    original = tiny_backend.model.generate

    def spy(*args, **kwargs):
        seen.append("inputs_embeds" in kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(tiny_backend.model, "generate", spy)
    eco.generate([BENIGN, "What is the capital of France?"], config=CFG)
    eco.generate([FLAGGED, BENIGN], config=CFG)
    assert seen == [False, True]


def test_modes(tiny_backend, toy_guard) -> None:
    shadow = ECO(tiny_backend, toy_guard, mode="shadow").generate([FLAGGED], config=CFG)[0]
    assert (
        shadow.decision.flagged
        and not shadow.decision.corrupted
        and shadow.decision.mode == "shadow"
    )
    assert shadow.text == _plain(tiny_backend, FLAGGED)
    off = ECO(tiny_backend, toy_guard, mode="off").decide(FLAGGED)
    assert off.mode == "off" and off.score is None and not off.flagged
    per_call = ECO(tiny_backend, toy_guard).decide(FLAGGED, mode="shadow")
    assert per_call.flagged and not per_call.corrupted
    with pytest.raises(ConfigurationError, match="Unknown mode 'loud'"):
        ECO(tiny_backend, toy_guard, mode="loud")
    with pytest.raises(ConfigurationError, match="needs a guard"):
        ECO(tiny_backend, None)
    # An empty mode is a mistake, not "the engine's mode" (an enforcing engine answered under it).
    enforcing = ECO(tiny_backend, toy_guard)
    with pytest.raises(ConfigurationError, match="Unknown mode ''"):
        enforcing.decide(FLAGGED, mode="")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="Unknown mode ''"):
        enforcing.replace(mode="")  # type: ignore[arg-type]


def test_decide_texts_refuses_one_string(tiny_backend, toy_guard) -> None:
    # One string would be decided character by character (in off mode, without an error).
    for mode in ("enforce", "off"):
        with pytest.raises(InvalidInputError, match=r"one string.*\[text\]"):
            ECO(tiny_backend, toy_guard, mode=mode).decide_texts("abc")


def test_corruption_noise_is_seeded_from_the_text(eco, tiny_backend) -> None:
    # Greedy: the answer to a flagged prompt depends only on the prompt, not on any caller seed.
    answers = {eco.generate([FLAGGED], config=CFG, seeds=[s])[0].text for s in (None, 1, 2, 3)}
    assert len(answers) == 1
    assert answers != {_plain(tiny_backend, FLAGGED)}
    request = eco.prepare(FLAGGED)
    assert request.corruption_seed == eco.prepare(FLAGGED, seed=9).corruption_seed
    assert request.corruption_seed != eco.prepare("Tell me about Hogwarts school.").corruption_seed


SAMPLED = GenerationConfig(max_new_tokens=8, temperature=1.0)


def test_sampling_is_random_unless_seeded(eco) -> None:
    for prompt in (FLAGGED, BENIGN):
        unseeded = {eco.generate([prompt], config=SAMPLED)[0].text for _ in range(3)}
        assert len(unseeded) > 1, "identical prompts must not return the same sample"
        seeded = [eco.generate([prompt], config=SAMPLED, seeds=[5])[0].text for _ in range(2)]
        assert seeded[0] == seeded[1]
        assert eco.generate([prompt], config=SAMPLED, seeds=[6])[0].text != seeded[0]


def test_a_seed_torch_would_fold_is_refused(eco) -> None:
    for seed in (-1, 2**63, 2**64):
        with pytest.raises(InvalidInputError, match=r"seed is an integer in \[0, 2\*\*63\)"):
            eco.generate([BENIGN], config=SAMPLED, seeds=[seed])


def test_stream_refuses_an_option_it_does_not_take(eco) -> None:
    with pytest.raises(InvalidInputError, match=r"unknown option\(s\) max_new_tokens.*config="):
        eco.stream(BENIGN, max_new_tokens=3)  # type: ignore[call-arg]


def test_sampled_batch_is_one_generate_call(eco, tiny_backend, monkeypatch) -> None:
    calls = []
    original = tiny_backend.model.generate

    def spy(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(tiny_backend.model, "generate", spy)
    prompts = [FLAGGED, BENIGN, "What is the capital of France?"]
    first = [r.text for r in eco.generate(prompts, config=SAMPLED, seeds=[1, 2, 3])]
    again = [r.text for r in eco.generate(prompts, config=SAMPLED, seeds=[1, 2, 3])]
    assert calls == [3, 3] and first == again


def test_concurrent_seeded_sampling_needs_no_lock(eco) -> None:
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(p, s) for p in (FLAGGED, BENIGN) for s in (1, 2)]
    alone = [eco.generate([p], config=SAMPLED, seeds=[s])[0].text for p, s in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(
            pool.map(
                lambda job: eco.generate([job[0]], config=SAMPLED, seeds=[job[1]])[0].text, jobs
            )
        )
    assert together == alone


def test_stream_reports_the_backends_usage(eco) -> None:
    for prompt in (FLAGGED, BENIGN):
        stream = eco.stream(prompt, config=CFG)
        assert stream.completion_tokens is None and stream.finish_reason is None
        "".join(stream)
        result = eco.generate([prompt], config=CFG)[0]
        assert (stream.completion_tokens, stream.finish_reason) == (
            result.completion_tokens,
            result.finish_reason,
        )


def test_prepared_request_runs_on_every_path(eco, monkeypatch) -> None:
    import eco_integrations.engine as engine_module

    renders = []
    original = engine_module.render

    def counted(*args, **kwargs):
        renders.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(engine_module, "render", counted)
    request = eco.prepare(FLAGGED)
    text = eco.generate([request], config=CFG)[0].text
    assert "".join(eco.stream(request, config=CFG)) == text
    logits, decisions = eco.next_token_logits([request])
    assert decisions == [request.decision] and logits.shape[0] == 1
    assert len(renders) == 1
    with pytest.raises(InvalidInputError, match="already carry their settings"):
        eco.generate([request], config=CFG, seeds=[1])
    with pytest.raises(InvalidInputError, match="not a mix"):
        eco.generate([request, BENIGN], config=CFG)


def test_threshold_override_per_call_and_in_policy(tiny_backend, toy_guard) -> None:
    eco = ECO(tiny_backend, toy_guard)
    score = eco.decide(FLAGGED).score
    assert score is not None
    above = eco.decide(FLAGGED, threshold=min(score + 0.01, 0.999))
    assert not above.flagged and not above.corrupted and above.target is None
    below = eco.decide(BENIGN, threshold=0.0)
    assert below.flagged and below.corrupted and below.threshold == 0.0 and below.target is not None
    strict = ECO(tiny_backend, toy_guard, policy=ECOPolicy(threshold=min(score + 0.01, 0.999)))
    assert not strict.decide(FLAGGED).flagged
    assert strict.policy_version != eco.policy_version
    with pytest.raises(InvalidInputError, match="threshold is a probability"):
        eco.decide(FLAGGED, threshold=float("nan"))
    with pytest.raises(InvalidInputError, match="decisions or mode/threshold"):
        eco.generate([FLAGGED], config=CFG, decisions=[above], threshold=0.5)
    # A policy takes what a call takes: 0.0 (every prompt flagged) in, 1.0 out.
    everything = ECO(tiny_backend, toy_guard, policy=ECOPolicy(threshold=0.0))
    assert everything.decide(BENIGN).flagged
    with pytest.raises(ValueError, match="less than 1"):
        ECOPolicy(threshold=1.0)


def test_stream_equals_generate(eco) -> None:
    for prompt in (FLAGGED, BENIGN):
        stream = eco.stream(prompt, config=CFG)
        decision = stream.decision
        text = "".join(stream)
        result = eco.generate([prompt], config=CFG)[0]
        assert decision == result.decision.model_copy(update={"latency_ms": decision.latency_ms})
        assert text == result.text


def test_stop_sequences(tiny_backend, toy_guard) -> None:
    eco = ECO(tiny_backend, toy_guard, mode="off")
    full = eco.generate([BENIGN], config=GenerationConfig(max_new_tokens=16))[0].text
    assert len(full) > 3
    stop = full[2:4]
    cut = eco.generate([BENIGN], config=GenerationConfig(max_new_tokens=16, stop=[stop]))[0]
    assert cut.text == full[: full.find(stop)] and cut.finish_reason == "stop"
    streamed = "".join(eco.stream(BENIGN, config=GenerationConfig(max_new_tokens=16, stop=[stop])))
    assert streamed == cut.text


def test_decisions_are_reused(eco) -> None:
    decision = eco.decide(FLAGGED)
    reused = eco.generate([BENIGN], config=CFG, decisions=[decision])[0]
    assert reused.decision is decision and reused.corrupted_tokens > 0
    with pytest.raises(InvalidInputError, match="2 decisions for 1 prompts"):
        eco.generate([BENIGN], config=CFG, decisions=[decision, decision])


def test_async_paths(eco) -> None:
    async def run():
        results = await asyncio.gather(*(eco.agenerate([p], config=CFG) for p in (FLAGGED, BENIGN)))
        chunks = [c async for c in await eco.astream(FLAGGED, config=CFG)]
        return results, chunks

    results, chunks = asyncio.run(run())
    assert [r[0].text for r in results] == [
        eco.generate([p], config=CFG)[0].text for p in (FLAGGED, BENIGN)
    ]
    assert "".join(chunks) == results[0][0].text


def test_next_token_logits_benign_equals_plain(eco, tiny_backend) -> None:
    prompts = ["Question: bread?\nAnswer:", "Question: Harry Potter at Hogwarts?\nAnswer:"]
    logits, decisions = eco.next_token_logits(prompts)
    with torch.no_grad():
        ids = torch.tensor([render(tiny_backend.tokenizer, prompts[0], raw=True).input_ids])
        plain = tiny_backend.model(input_ids=ids).logits[0, -1]
    assert not decisions[0].flagged
    assert torch.allclose(logits[0], plain, atol=1e-5)


def test_bad_inputs(eco, tiny_backend) -> None:
    with pytest.raises(InvalidInputError, match="prompt is empty"):
        eco.generate([""], config=CFG)
    with pytest.raises(InvalidInputError, match="Prompt 0 is int"):
        eco.generate([3], config=CFG)
    with pytest.raises(InvalidInputError, match="wrap a single prompt"):
        eco.generate("a bare string", config=CFG)
    with pytest.raises(ContextLengthError, match="context window is 256") as too_long:
        eco.generate(["word " * 300], config=CFG)
    assert isinstance(
        too_long.value, InvalidInputError
    )  # callers catching bad input still catch it
    assert too_long.value.context_window == 256 and too_long.value.prompt_tokens > 256
    with pytest.raises(ConfigurationError, match="exceeds the model's hidden size 32"):
        ECO(
            tiny_backend,
            eco.guard,
            policy=ECOPolicy(corruption=CorruptionConfig(name="zero_out_top_k", dims=64)),
        )
    with pytest.raises(ValueError, match="Unknown token selector"):
        ECOPolicy(selection={"name": "verbs"})
    with pytest.raises(InvalidInputError, match="empty list of prompts"):
        eco.generate([], config=CFG)
    with pytest.raises(InvalidInputError, match="1 seeds for 2 prompts"):
        eco.next_token_logits(["a", "b"], seeds=[1])


def test_policy_roundtrip_and_version(tmp_path) -> None:
    policy = ECOPolicy(
        corruption=CorruptionConfig(name="zero_out_top_k", dims=4),
        selection=SelectionConfig(name="entities", terms=("Hogwarts",)),
    )
    policy.save(tmp_path)
    loaded = ECOPolicy.load(tmp_path)
    assert loaded == policy and loaded.version_hash == policy.version_hash
    assert ECOPolicy().version_hash != policy.version_hash
    (tmp_path / "policy.json").write_text('{"schema_version": 7}')
    with pytest.raises(ValueError, match="schema version 7"):
        ECOPolicy.load(tmp_path)
    (tmp_path / "policy.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="holds a JSON list, not a policy object"):
        ECOPolicy.load(tmp_path)
    (tmp_path / "policy.json").write_text('{"schema_version": 1, "threshold": 5}')
    with pytest.raises(ValueError, match=r"policy.json is not a valid policy \(threshold: "):
        ECOPolicy.load(tmp_path)
    (tmp_path / "policy.json").write_bytes(b"\x89PNG\r\n")
    with pytest.raises(ValueError, match="is not valid UTF-8 JSON"):
        ECOPolicy.load(tmp_path)
    (tmp_path / "integrity.json").write_text('{"schema_version": 1, "files": {}, "digest": "x"}')
    with pytest.raises(ValueError, match="is a guard's integrity record, not a policy"):
        ECOPolicy.load(tmp_path / "integrity.json")


def test_identifying_params_change_with_policy(tiny_backend, toy_guard) -> None:
    a = ECO(tiny_backend, toy_guard).identifying_params()
    b = ECO(
        tiny_backend,
        toy_guard,
        policy=ECOPolicy(
            corruption=CorruptionConfig(name="rand_noise_first_n", dims=2, strength=5.0)
        ),
    ).identifying_params()
    assert a["policy_version"] != b["policy_version"] and a["guard_id"] == "toyguard0001"


def _substituted(eco: ECO, tiny_backend) -> tuple[ECORequest, list[int], torch.Tensor]:
    """The flagged prompt's request, the positions its corruption changed, and the rows there.

    Checks on the way that exactly the corrupted positions changed, and that generation still
    answers the benign prompt as the plain model does."""
    request = eco.prepare(FLAGGED)
    row, corrupted = eco._row(request)
    assert corrupted > 0 and row.embeds is not None
    clean = tiny_backend.embed(row.input_ids)
    changed = [i for i, e in enumerate(row.embeds) if not torch.equal(e, clean[i])]
    assert len(changed) == corrupted
    benign, flagged = eco.generate([BENIGN, FLAGGED], config=CFG)
    assert benign.text == _plain(tiny_backend, BENIGN) and flagged.corrupted_tokens > 0
    return request, changed, row.embeds


def _one_of(row: torch.Tensor, table: torch.Tensor) -> bool:
    return any(torch.equal(row, r.to(row.dtype)) for r in table)


def test_substitute_tokens_puts_name_like_tokens_in_place(tiny_backend, toy_guard) -> None:
    policy = ECOPolicy(
        corruption=CorruptionConfig(name="substitute_tokens", strength=1.0),
        selection=SelectionConfig(name="content"),
    )
    eco = ECO(tiny_backend, toy_guard, policy=policy)
    table = eco.replacement_embeddings()
    assert table.shape[1] == tiny_backend.hidden_size and table.shape[0] > 0
    # Computed once per backend: engines made by replace() share it.
    assert eco.replace(mode="shadow").replacement_embeddings() is table
    _, changed, embeds = _substituted(eco, tiny_backend)
    assert all(_one_of(embeds[i], table) for i in changed)


def test_invent_words_starts_words_with_name_pieces_and_goes_on_with_word_pieces(
    tiny_backend, toy_guard
) -> None:
    policy = ECOPolicy(
        corruption=CorruptionConfig(name="invent_words", strength=1.0),
        selection=SelectionConfig(name="content"),
    )
    eco = ECO(tiny_backend, toy_guard, policy=policy)
    starts, pieces = eco.replacements_for("invent_words"), eco.continuations_for("invent_words")
    assert starts is not None and pieces is not None
    assert eco.continuations_for("substitute_tokens") is None
    request, changed, embeds = _substituted(eco, tiny_backend)
    goes_on = word_continuations(request.prompt)
    assert goes_on[changed].any() and (~goes_on[changed]).any()
    for i in changed:
        assert _one_of(embeds[i], pieces if goes_on[i] else starts)


def test_forced_decisions_name_the_target_the_entities_selector_reads(
    tiny_backend, toy_guard
) -> None:
    eco = ECO(
        tiny_backend,
        toy_guard,
        policy=ECOPolicy(
            corruption=CorruptionConfig(name="rand_noise_full", strength=1.0),
            selection=SelectionConfig(name="entities"),
        ),
    )
    assert toy_guard.terms["harry-potter"], "the toy target has mined terms"
    prompt = "Tell me about Harry Potter and the weather in the valley today."
    forced = eco.forced_decisions([prompt])[0]
    assert forced.corrupted and forced.target == "harry-potter"
    # A forced prompt is corrupted where a flagged one would be: at the target's terms only,
    # not over the whole content (the selector's fallback when no target names any terms).
    entities = int(
        eco._corruption_mask(eco.prepare(prompt, decision=forced), eco.policy.selection).sum()
    )
    content = int(
        eco._corruption_mask(
            eco.prepare(prompt, decision=forced), SelectionConfig(name="content")
        ).sum()
    )
    assert 0 < entities < content
    with pytest.raises(ConfigurationError, match=r"no target 'voldemort'.*harry-potter"):
        eco.forced_decisions([prompt], target="voldemort")
    two = copy.deepcopy(toy_guard)
    two.terms["other"] = ["Gandalf"]
    several = ECO(tiny_backend, two, policy=eco.policy)
    with pytest.raises(ConfigurationError, match=r"need the target whose terms.*pass target="):
        several.forced_decisions([prompt])
    assert several.forced_decisions([prompt], target="other")[0].target == "other"


def test_the_engine_names_arguments_of_the_wrong_kind(tiny_backend, toy_guard) -> None:
    with pytest.raises(ConfigurationError, match="first argument is a model backend"):
        ECO(None, toy_guard)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"got str; load a folder with Guard\.load"):
        ECO(tiny_backend, "guards/hp")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="policy must be an ECOPolicy, got dict"):
        ECO(tiny_backend, toy_guard, policy={"threshold": 0.5})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"batch_size must be an integer >= 1, got 2\.5"):
        ECO(tiny_backend, toy_guard, batch_size=2.5)  # type: ignore[arg-type]
    eco = ECO(tiny_backend, toy_guard)
    # A dict of GenerationConfig's fields is read as one; anything else is named.
    (result,) = eco.generate([BENIGN], config={"max_new_tokens": 2})
    assert result.completion_tokens <= 2
    with pytest.raises(InvalidInputError, match="config must be a GenerationConfig"):
        eco.generate([BENIGN], config=2)  # type: ignore[arg-type]


async def test_a_cancelled_agenerate_stops_generating(eco) -> None:
    from support import assert_cancelling_stops_generation

    config = GenerationConfig(max_new_tokens=200)
    await assert_cancelling_stops_generation(
        eco.backend.model, lambda: eco.agenerate([BENIGN], config=config)
    )

    async def consume() -> None:
        stream = await eco.astream(BENIGN, config=config)
        try:
            async for _ in stream:
                pass
        finally:
            await stream.aclose()  # while the cancelled chunk's thread still runs

    await assert_cancelling_stops_generation(eco.backend.model, consume)


def test_a_prepared_request_refuses_a_threshold_of_zero_too(eco) -> None:
    # 0 (flag everything) equals False: it must not pass as "not given" and be ignored.
    request = eco.prepare(BENIGN)
    for option in ({"threshold": 0.0}, {"threshold": 0.1}, {"seeds": [1]}):
        with pytest.raises(InvalidInputError, match="already carry their settings"):
            eco.generate([request], **option)
    with pytest.raises(InvalidInputError, match="already carry their settings"):
        eco.stream(request, threshold=0.0)


def _restoring_engine(tiny_backend, toy_guard, *, restore: bool = True) -> ECO:
    policy = ECOPolicy(
        corruption=CorruptionConfig(name="invent_words", strength=1.0),
        selection=SelectionConfig(name="entities"),
        restore_prompt_words=restore,
    )
    return ECO(tiny_backend, toy_guard, policy=policy)


def test_restoring_reads_the_words_the_corruption_put_in_place(tiny_backend, toy_guard) -> None:
    eco = _restoring_engine(tiny_backend, toy_guard)
    request = eco.prepare(FLAGGED)
    row, corrupted, echoes = eco._row_and_echoes(request)
    assert row.embeds is not None and corrupted > 0
    # What the model reads at each corrupted position: the pool token whose embedding is there.
    pool_ids = [*eco._replacement_ids(4).tolist(), *eco._continuation_ids().tolist()]
    pool = tiny_backend.embed(pool_ids)
    clean = tiny_backend.embed(row.input_ids)
    changed = [i for i, e in enumerate(row.embeds) if not torch.equal(e, clean[i])]
    read = [
        next(t for t, e in zip(pool_ids, pool, strict=True) if torch.equal(e, row.embeds[i]))
        for i in changed
    ]
    assert changed == list(range(changed[0], changed[-1] + 1)), "one run: the name"
    start, end = request.prompt.offsets[changed[0]][0], request.prompt.offsets[changed[-1]][1]
    assert request.prompt.text[start:end].strip() == "Harry Potter"
    assert echoes == [Echo.of(tiny_backend.tokenizer.decode(read), "Harry Potter")]
    # Off, or for a benign prompt, there is nothing to write back.
    assert (
        _restoring_engine(tiny_backend, toy_guard, restore=False)._row_and_echoes(request)[2] == []
    )
    assert eco._row_and_echoes(eco.prepare(BENIGN))[2] == []


def test_restoring_writes_back_the_prompts_words_in_every_path(
    tiny_backend, toy_guard, monkeypatch
) -> None:
    eco = _restoring_engine(tiny_backend, toy_guard)
    (echo,) = eco._row_and_echoes(eco.prepare(FLAGGED))[2]
    read = " ".join(echo.read)
    # A model that repeats the name it read, as the real ones do.
    answer = f"{read} is a wizard, and {read}'s owl is white."

    def generate(rows, config, **_):
        return [Generation(answer, len(r.input_ids), 9, "stop") for r in rows]

    def stream(row, config, **_):
        def chunks():
            for i in range(0, len(answer), 3):
                yield answer[i : i + 3]
            return StreamEnd(9, "stop")

        return TextStream(chunks())

    monkeypatch.setattr(tiny_backend, "generate", generate)
    monkeypatch.setattr(tiny_backend, "stream", stream)
    restored = "Harry Potter is a wizard, and Harry Potter's owl is white."
    assert eco.generate([FLAGGED], config=CFG)[0].text == restored
    streamed = eco.stream(FLAGGED, config=CFG)
    assert "".join(streamed) == restored and streamed.completion_tokens == 9

    async def consume() -> str:
        chunks = [c async for c in await eco.astream(FLAGGED, config=CFG)]
        return "".join(chunks)

    assert asyncio.run(consume()) == restored
    off = _restoring_engine(tiny_backend, toy_guard, restore=False)
    assert off.generate([FLAGGED], config=CFG)[0].text == answer


def test_restoring_needs_a_corruption_that_puts_words_in_place() -> None:
    with pytest.raises(
        ValueError, match=r"restore_prompt_words.*invent_words or substitute_tokens"
    ):
        ECOPolicy(
            corruption=CorruptionConfig(name="rand_noise_full", strength=1.0),
            restore_prompt_words=True,
        )


def test_restoring_off_keeps_the_policys_version_and_file(tmp_path) -> None:
    policy = ECOPolicy()
    assert (
        policy.version_hash
        == ECOPolicy.model_validate(
            {**policy.model_dump(), "restore_prompt_words": False}
        ).version_hash
    )
    policy.save(tmp_path)
    assert "restore_prompt_words" not in (tmp_path / "policy.json").read_text()
    restoring = policy.model_copy(update={"restore_prompt_words": True})
    assert restoring.version_hash != policy.version_hash
    restoring.save(tmp_path)
    assert ECOPolicy.load(tmp_path).restore_prompt_words

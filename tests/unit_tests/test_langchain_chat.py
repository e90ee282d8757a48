"""ChatECOHuggingFace on the tiny random Llama and the toy guard: paths, decisions, bad input."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.messages import AIMessage, ChatMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool

from eco_integrations import ECO, ECOPolicy, InvalidInputError
from eco_integrations._prompting import render
from eco_integrations.backends._base import PreparedRow
from eco_integrations.config import GenerationConfig
from eco_integrations.langchain import ChatECOHuggingFace
from eco_integrations.langchain._messages import parse_tool_calls, to_chat_dicts

FORGET = "Who is Harry Potter?"
BENIGN = "How do I bake bread?"


class Recorder(BaseCallbackHandler):
    """Collects eco_decision events (and their tags) and each model run's starting tags/metadata."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.event_tags: list[list[str]] = []
        self.starts: list[dict[str, Any]] = []

    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        if name == "eco_decision":
            self.events.append(data)
            self.event_tags.append(kwargs.get("tags") or [])

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        self.starts.append(
            {"tags": kwargs.get("tags") or [], "metadata": kwargs.get("metadata") or {}}
        )


class AsyncRecorder(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        if name == "eco_decision":
            self.events.append(data)


@pytest.fixture
def eco(tiny_backend, toy_guard) -> ECO:
    engine = ECO(tiny_backend, toy_guard)
    # The tests below rely on the toy guard telling these two apart.
    assert engine.decide(FORGET).flagged and not engine.decide(BENIGN).flagged
    return engine


@pytest.fixture
def chat(eco: ECO) -> ChatECOHuggingFace:
    return ChatECOHuggingFace(engine=eco, max_tokens=6)


def test_invoke_reports_usage_model_name_and_no_marker(chat: ChatECOHuggingFace) -> None:
    message = chat.invoke(FORGET)
    assert isinstance(message, AIMessage)
    assert message.response_metadata["model_name"] == "tiny-llama"
    assert message.usage_metadata is not None and message.usage_metadata["output_tokens"] <= 6
    assert message.usage_metadata["input_tokens"] == len(
        render(chat.engine.backend.tokenizer, FORGET).input_ids
    )
    assert "eco" not in message.response_metadata
    assert "eco" not in str(message.content).lower()


def test_expose_decision_puts_it_in_response_metadata(eco: ECO) -> None:
    message = ChatECOHuggingFace(engine=eco, max_tokens=4, expose_decision=True).invoke(FORGET)
    assert message.response_metadata["eco"]["flagged"] is True
    assert message.response_metadata["eco"]["corrupted"] is True


def test_event_carries_the_decision_but_not_the_prompt(chat: ChatECOHuggingFace) -> None:
    rec = Recorder()
    chat.invoke(FORGET, {"callbacks": [rec], "tags": ["mine"]})
    chat.invoke(BENIGN, {"callbacks": [rec]})
    assert [e["flagged"] for e in rec.events] == [True, False]
    for event in rec.events:
        assert {"score", "threshold", "target", "mode", "policy_version", "text_sha256"} <= set(
            event
        )
        assert FORGET not in str(event) and BENIGN not in str(event)
    assert (
        "eco:flagged" in rec.event_tags[0]
        and "mine" in rec.event_tags[0]
        and "eco:clean" in rec.event_tags[1]
    )
    assert rec.events[0]["policy_version"] == chat.engine_view.policy_version
    assert rec.events[0]["score"] > rec.events[0]["threshold"]
    # The decision is made before the run starts, so the run itself carries it too.
    assert rec.starts[0]["tags"] == ["mine", "eco:flagged"]
    assert rec.starts[1]["tags"] == ["eco:clean"]


def _tagged_runs(rec: Recorder) -> list[tuple[str, bool]]:
    return [
        (next(t for t in start["tags"] if t.startswith("eco:")), start["metadata"]["eco_flagged"])
        for start in rec.starts
    ]


def test_every_call_starts_its_run_with_the_decision(chat: ChatECOHuggingFace) -> None:
    rec = Recorder()
    config: Any = {"callbacks": [rec]}
    chat.invoke(FORGET, config)
    list(chat.stream(BENIGN, config))
    asyncio.run(chat.ainvoke(BENIGN, config))

    async def astream() -> None:
        async for _ in chat.astream(FORGET, config):
            pass

    asyncio.run(astream())
    assert _tagged_runs(rec) == [
        ("eco:flagged", True),
        ("eco:clean", False),
        ("eco:clean", False),
        ("eco:flagged", True),
    ]
    assert [e["flagged"] for e in rec.events] == [True, False, False, True]


class RunRecorder(BaseCallbackHandler):
    """Which run each eco_decision event hangs on, and which runs started."""

    def __init__(self) -> None:
        self.started: list[Any] = []
        self.event_runs: list[Any] = []

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        self.started.append(kwargs["run_id"])

    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        self.event_runs.append(kwargs["run_id"])


def test_stream_on_its_own_hangs_the_event_on_its_own_run(chat: ChatECOHuggingFace) -> None:
    # LangChain's stream() calls the streaming hook without a run manager; the event still
    # reaches the stream's run, not nowhere.
    rec = RunRecorder()
    list(chat.stream(FORGET, {"callbacks": [rec]}))
    assert len(rec.started) == 1 and rec.event_runs == rec.started


def test_with_a_cache_calls_are_answered_from_it(eco: ECO) -> None:
    from langchain_core.caches import InMemoryCache

    cache = InMemoryCache()
    chat = ChatECOHuggingFace(engine=eco, max_tokens=4, cache=cache)
    first = chat.invoke(FORGET)
    calls = 0
    generate = eco.generate

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return generate(*args, **kwargs)

    chat.engine_view.generate = counting  # type: ignore[method-assign]
    rec = Recorder()
    assert chat.invoke(FORGET, {"callbacks": [rec]}).content == first.content
    assert calls == 0  # the cache key is not made unique by a prepared request
    assert _tagged_runs(rec) == [("eco:flagged", True)]  # and the cached run is still tagged
    chat.invoke(BENIGN)
    assert calls == 1  # another prompt is not
    # The agent middleware hands in a fresh decision each turn (its latency differs every time):
    # the same prompt still hits the same cache entry.
    handed = eco.decide(FORGET).model_copy(update={"latency_ms": 12.345})
    assert chat.invoke(FORGET, eco_decision=handed).content == first.content
    assert calls == 1
    # A decision that corrupts where the model's own would not is another answer, not a hit.
    forced = eco.decide(BENIGN).model_copy(update={"flagged": True, "corrupted": True})
    chat.invoke(BENIGN, eco_decision=forced)
    assert calls == 2


def test_batch_runs_carry_the_decision_in_tags_and_metadata(chat: ChatECOHuggingFace) -> None:
    rec = Recorder()
    chat.batch([FORGET, BENIGN], {"callbacks": [rec]})
    assert "eco:flagged" in rec.starts[0]["tags"] and "eco:clean" in rec.starts[1]["tags"]
    meta = rec.starts[0]["metadata"]
    assert meta["eco_flagged"] is True and meta["eco_target"] == "harry-potter"
    assert meta["eco_policy_version"] == chat.engine_view.policy_version
    assert meta["eco_score"] > meta["eco_threshold"]
    assert rec.starts[1]["metadata"]["eco_flagged"] is False
    assert FORGET not in str(rec.starts[0]["metadata"])


def test_benign_answer_equals_the_plain_model(chat: ChatECOHuggingFace, tiny_backend) -> None:
    plain = tiny_backend.generate(
        [PreparedRow(render(tiny_backend.tokenizer, BENIGN).input_ids)],
        GenerationConfig(max_new_tokens=6),
    )[0]
    assert chat.invoke(BENIGN).content == plain.text
    off = ChatECOHuggingFace(engine=chat.engine, max_tokens=6, mode="off")
    assert (
        off.invoke(FORGET).content
        == tiny_backend.generate(
            [PreparedRow(render(tiny_backend.tokenizer, FORGET).input_ids)],
            GenerationConfig(max_new_tokens=6),
        )[0].text
    )


def test_flagged_answer_is_corrupted(chat: ChatECOHuggingFace, eco: ECO) -> None:
    corrupted = chat.invoke(FORGET).content
    plain = ChatECOHuggingFace(engine=eco, max_tokens=6, mode="off").invoke(FORGET).content
    assert corrupted != plain


def test_mixed_batch_is_one_generate_call_and_equals_one_by_one(
    chat: ChatECOHuggingFace, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = [FORGET, BENIGN, "Tell me about Hogwarts school.", "What is the capital of France?"]
    singles = [chat.invoke(p).content for p in prompts]
    calls: list[int] = []
    original = chat.engine.generate

    def spy(prompts: Any, **kwargs: Any) -> Any:
        calls.append(len(prompts))
        return original(prompts, **kwargs)

    monkeypatch.setattr(chat.engine_view, "generate", spy)
    rec = Recorder()
    batched = chat.batch(prompts, {"callbacks": [rec]})
    assert calls == [4]
    assert [m.content for m in batched] == singles
    assert [e["flagged"] for e in rec.events] == [True, False, True, False]
    assert len(rec.starts) == 4


async def test_abatch_matches_batch(chat: ChatECOHuggingFace) -> None:
    prompts = [FORGET, BENIGN]
    assert [m.content for m in await chat.abatch(prompts)] == [
        m.content for m in chat.batch(prompts)
    ]


def test_batch_return_exceptions_keeps_good_rows(chat: ChatECOHuggingFace) -> None:
    out = chat.batch([BENIGN, [SystemMessage("only a system message")]], return_exceptions=True)
    assert isinstance(out[0], AIMessage) and isinstance(out[1], InvalidInputError)
    with pytest.raises(InvalidInputError, match="no non-empty HumanMessage"):
        chat.batch([BENIGN, [SystemMessage("only a system message")]])


def test_stream_matches_invoke_and_ends_with_the_backends_usage(chat: ChatECOHuggingFace) -> None:
    chunks = list(chat.stream(FORGET))
    invoked = chat.invoke(FORGET)
    assert "".join(str(c.content) for c in chunks) == invoked.content
    last = chunks[-1]
    assert last.chunk_position == "last"
    # The backend's own count and finish reason, not a re-tokenized guess.
    assert last.usage_metadata == invoked.usage_metadata
    assert last.response_metadata["finish_reason"] == invoked.response_metadata["finish_reason"]
    assert last.response_metadata["model_name"] == "tiny-llama"
    assert "eco" not in last.response_metadata


def test_stream_inside_a_chain_emits_the_same_decision_as_invoke(chat: ChatECOHuggingFace) -> None:
    rec_stream, rec_invoke = Recorder(), Recorder()
    chain = RunnableLambda(lambda q: q) | chat
    streamed = "".join(str(c.content) for c in chain.stream(FORGET, {"callbacks": [rec_stream]}))
    assert streamed == chat.invoke(FORGET, {"callbacks": [rec_invoke]}).content
    assert len(rec_stream.events) == 1
    same = ("flagged", "score", "threshold", "target", "corrupted", "text_sha256", "policy_version")
    assert {k: rec_stream.events[0][k] for k in same} == {k: rec_invoke.events[0][k] for k in same}


def test_stream_on_its_own_exposes_the_decision_on_request(eco: ECO) -> None:
    # LangChain's stream() gives _stream no run manager: with no enclosing run the decision
    # reaches the caller through the last chunk, when asked for.
    chunks = list(ChatECOHuggingFace(engine=eco, max_tokens=4, expose_decision=True).stream(FORGET))
    assert chunks[-1].response_metadata["eco"]["flagged"] is True


def test_streaming_flag_routes_invoke_through_stream_with_same_decision(eco: ECO) -> None:
    rec = Recorder()
    streaming = ChatECOHuggingFace(engine=eco, max_tokens=6, streaming=True)
    chain = RunnableLambda(lambda q: q) | streaming
    assert (
        chain.invoke(FORGET, {"callbacks": [rec]}).content
        == ChatECOHuggingFace(engine=eco, max_tokens=6).invoke(FORGET).content
    )
    assert [e["flagged"] for e in rec.events] == [True]


async def test_astream_matches_stream(chat: ChatECOHuggingFace) -> None:
    rec = AsyncRecorder()
    chain = RunnableLambda(lambda q: q) | chat
    chunks = [c async for c in chain.astream(FORGET, {"callbacks": [rec]})]
    assert "".join(str(c.content) for c in chunks) == "".join(
        str(c.content) for c in chat.stream(FORGET)
    )
    assert [e["flagged"] for e in rec.events] == [True]
    direct = [c async for c in chat.astream(FORGET)]
    assert direct[-1].usage_metadata == chunks[-1].usage_metadata


async def test_ainvoke_emits_the_decision_on_its_run(chat: ChatECOHuggingFace) -> None:
    rec = AsyncRecorder()
    await chat.ainvoke(FORGET, {"callbacks": [rec]})
    await chat.ainvoke(BENIGN, {"callbacks": [rec]})
    assert [e["flagged"] for e in rec.events] == [True, False]


async def test_concurrent_ainvoke_with_seeds_equals_sequential(eco: ECO) -> None:
    sampler = ChatECOHuggingFace(engine=eco, max_tokens=5, temperature=1.0)
    prompts = [
        FORGET,
        BENIGN,
        "Tell me about Hogwarts school.",
        "What is the capital of France?",
    ] * 5
    sequential = [sampler.invoke(p, seed=i).content for i, p in enumerate(prompts)]
    concurrent = await asyncio.gather(*(sampler.ainvoke(p, seed=i) for i, p in enumerate(prompts)))
    assert [m.content for m in concurrent] == sequential
    assert len(set(sequential)) > 1  # different seeds and prompts really give different samples


async def test_ainvoke_does_not_block_the_event_loop(chat: ChatECOHuggingFace) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    await chat.ainvoke(FORGET, max_tokens=12)
    task.cancel()
    assert ticks > 0


def test_stop_and_max_tokens(chat: ChatECOHuggingFace) -> None:
    full = str(chat.invoke(BENIGN, max_tokens=12).content)
    assert chat.invoke(BENIGN, max_tokens=2).usage_metadata["output_tokens"] <= 2  # type: ignore[index]
    stop = next(ch for ch in full[1:] if ch.strip())
    cut = str(chat.invoke(BENIGN, max_tokens=12, stop=[stop]).content)
    assert stop not in cut and full.startswith(cut)
    # One string is one stop sequence (as OpenAI's API takes it), not one per character.
    never = stop + "\u2603\u2603"
    assert chat.invoke(BENIGN, max_tokens=12, stop=never).content == full  # type: ignore[arg-type]


def test_multi_turn_with_tool_messages_and_ai_last_renders(chat: ChatECOHuggingFace) -> None:
    conversation = [
        SystemMessage("You are terse."),
        HumanMessage("What is 2 + 3?"),
        AIMessage("", tool_calls=[{"name": "add", "args": {"a": 2, "b": 3}, "id": "call_1"}]),
        ToolMessage("5", tool_call_id="call_1"),
        AIMessage("It is 5."),
    ]
    assert isinstance(chat.invoke(conversation), AIMessage)
    rendered = to_chat_dicts(conversation, native_tools=False)
    assert [m["role"] for m in rendered] == ["system", "user", "assistant", "tool", "assistant"]
    assert (
        '<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>'
        in rendered[2]["content"]
    )


def test_window_catches_a_topic_named_only_in_an_earlier_turn(eco: ECO) -> None:
    conversation = [
        HumanMessage("Who is Harry Potter?"),
        AIMessage("A character."),
        HumanMessage("Where was he born?"),
    ]
    latest_only = ChatECOHuggingFace(engine=eco, max_tokens=2)
    windowed = ChatECOHuggingFace(engine=eco, max_tokens=2, classify_window=2)
    rec = Recorder()
    latest_only.invoke(conversation, {"callbacks": [rec]})
    windowed.invoke(conversation, {"callbacks": [rec]})
    assert [e["flagged"] for e in rec.events] == [False, True]
    assert (
        windowed._identifying_params["policy_version"]
        != latest_only._identifying_params["policy_version"]
    )
    engine_window = ChatECOHuggingFace(
        engine=ECO(eco.backend, eco.guard, policy=ECOPolicy(classify_window=2)), max_tokens=2
    )
    assert engine_window.engine_view.decide(to_chat_dicts(conversation, native_tools=False)).flagged


def test_threshold_range_is_the_same_when_built_as_per_call(eco: ECO) -> None:
    from pydantic import ValidationError

    from eco_integrations.langchain import ECODocumentCompressor

    assert ChatECOHuggingFace(engine=eco, threshold=0.0).threshold == 0.0
    assert ECODocumentCompressor(engine=eco, threshold=0.0).threshold == 0.0
    for bad in (1.0, -0.1):
        with pytest.raises(ValidationError):
            ChatECOHuggingFace(engine=eco, threshold=bad)
        with pytest.raises(ValidationError):
            ECODocumentCompressor(engine=eco, threshold=bad)


def test_threshold_and_mode_per_call(chat: ChatECOHuggingFace) -> None:
    rec = Recorder()
    chat.invoke(BENIGN, {"callbacks": [rec]}, eco_threshold=0.0)
    chat.invoke(
        FORGET, {"callbacks": [rec]}, eco_threshold=chat.engine_view.decide(FORGET).score
    )  # not above itself
    chat.invoke(FORGET, {"callbacks": [rec]}, eco_mode="shadow")
    assert [(e["flagged"], e["corrupted"]) for e in rec.events] == [
        (True, True),
        (False, False),
        (True, False),
    ]
    assert rec.events[0]["threshold"] == 0.0
    with pytest.raises(InvalidInputError, match="drop eco_threshold"):
        chat.invoke(FORGET, eco_decision=chat.engine_view.decide(FORGET), eco_threshold=0.5)


def test_threshold_field_is_the_engine_policys(chat: ChatECOHuggingFace) -> None:
    score = chat.engine_view.decide(FORGET).score
    assert score is not None
    strict = ChatECOHuggingFace(engine=chat.engine, max_tokens=2, threshold=score)
    assert strict.engine_view.policy.threshold == score
    assert (
        strict._identifying_params["policy_version"] != chat._identifying_params["policy_version"]
    )
    rec = Recorder()
    strict.invoke(FORGET, {"callbacks": [rec]})
    assert (
        rec.events[0]["flagged"] is False and rec.events[0]["threshold"] == score
    )  # flagged means score > threshold
    # A copy with other fields, or an assignment, runs with them (no validator runs for a
    # copy, so the engine view follows the fields, not the constructor).
    copied = chat.model_copy(update={"threshold": score, "mode": "shadow", "classify_window": 2})
    view = copied.engine_view
    assert (view.policy.threshold, view.mode, view.policy.classify_window) == (score, "shadow", 2)
    assert (
        copied._identifying_params["policy_version"]
        == (
            ChatECOHuggingFace(
                engine=chat.engine, threshold=score, mode="shadow", classify_window=2
            )
        )._identifying_params["policy_version"]
    )
    assert chat.engine_view.policy.threshold != score  # the original is unchanged
    chat.threshold = score
    rec = Recorder()
    chat.invoke(FORGET, {"callbacks": [rec]})
    assert rec.events[0]["flagged"] is False and rec.events[0]["threshold"] == score


def test_identifying_params_and_cache_key_follow_the_policy(eco: ECO) -> None:
    chat = ChatECOHuggingFace(engine=eco)
    params = chat._identifying_params
    for key in (
        "guard_id",
        "guard_version",
        "policy_version",
        "corruption",
        "corruption_dims",
        "corruption_strength",
    ):
        assert params[key] == eco.identifying_params()[key]
    shadow = ChatECOHuggingFace(engine=eco, mode="shadow")
    assert chat._get_llm_string() != shadow._get_llm_string()
    ls = chat._get_ls_params(stop=["x"], model="other")
    assert (
        ls["ls_provider"] == "huggingface"
        and ls["ls_model_name"] == "other"
        and ls["ls_stop"] == ["x"]
    )


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"Sunny in {city}"


def test_bind_tools_describes_tools_when_the_template_cannot(chat: ChatECOHuggingFace) -> None:
    bound = chat.bind_tools([get_weather], tool_choice="get_weather")
    call = chat._conversation([HumanMessage("Weather in Paris?")], bound.kwargs)  # type: ignore[attr-defined]
    assert call.tools is None and call.tool_names == ["get_weather"]
    assert call.chat[0]["role"] == "system" and '"name": "get_weather"' in call.chat[0]["content"]
    assert "You must call the tool get_weather" in call.chat[0]["content"]
    with pytest.raises(InvalidInputError, match="not one of the bound tools"):
        chat.bind_tools([get_weather], tool_choice="nope")


def test_bind_tools_passes_tools_to_a_template_that_supports_them(
    eco: ECO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        eco.backend.tokenizer,
        "chat_template",
        "{% if tools %}TOOLS:{{ tools | tojson }}\n{% endif %}"
        + eco.backend.tokenizer.chat_template,
    )
    chat = ChatECOHuggingFace(engine=eco, max_tokens=2)
    bound = chat.bind_tools([get_weather])
    call = chat._conversation([HumanMessage("Weather in Paris?")], bound.kwargs)  # type: ignore[attr-defined]
    assert call.tools is not None and call.tools[0]["function"]["name"] == "get_weather"
    assert call.chat[0]["role"] == "user"
    assert 'TOOLS:[{"' in render(eco.backend.tokenizer, call.chat, tools=call.tools).text
    # The template cannot force a call: a forcing tool_choice is said in a system message.
    forced = chat.bind_tools([get_weather], tool_choice="any")
    call = chat._conversation([HumanMessage("Weather in Paris?")], forced.kwargs)  # type: ignore[attr-defined]
    assert call.chat[0] == {
        "role": "system",
        "content": "You must call one of the tools.",
        "eco_scaffold_from": 0,  # the skin's words: never classified
    }


def test_tool_choice_none_answers_as_if_no_tool_were_bound(chat: ChatECOHuggingFace) -> None:
    bound = chat.bind_tools([get_weather], tool_choice="none")
    call = chat._conversation([HumanMessage("Weather in Paris?")], bound.kwargs)  # type: ignore[attr-defined]
    # Not described, not parsed: a reply that looks like a call stays text.
    assert call.tools is None and call.tool_names == []
    assert call.chat == [{"role": "user", "content": "Weather in Paris?"}]


def test_parallel_tool_calls_false_keeps_the_first_call(chat: ChatECOHuggingFace) -> None:
    two = (
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>'
    )
    for parallel, cities in (
        (None, ["Paris", "Rome"]),
        (False, ["Paris"]),
        (True, ["Paris", "Rome"]),
    ):
        options = {} if parallel is None else {"parallel_tool_calls": parallel}
        bound = chat.bind_tools([get_weather], **options)
        call = chat._conversation([HumanMessage("Weather?")], bound.kwargs)  # type: ignore[attr-defined]
        _, calls, _ = call.parsed(two)
        assert [c["args"]["city"] for c in calls] == cities, parallel


@pytest.mark.parametrize(
    ("text", "content", "calls"),
    [
        (
            '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>',
            "",
            [("get_weather", {"city": "Paris"})],
        ),
        (
            'Let me check. {"name": "get_weather", "arguments": {"city": "Rome"}}',
            "Let me check.",
            [("get_weather", {"city": "Rome"})],
        ),
        (
            '```json\n{"name": "get_weather", "parameters": {"city": "Oslo"}}\n```',
            "",
            [("get_weather", {"city": "Oslo"})],
        ),
        (
            '{"name": "unknown", "arguments": {}} plain answer',
            '{"name": "unknown", "arguments": {}} plain answer',
            [],
        ),
        ("No tools needed.", "No tools needed.", []),
    ],
)
def test_parse_tool_calls(text: str, content: str, calls: list[tuple[str, dict[str, Any]]]) -> None:
    got_content, got_calls, invalid = parse_tool_calls(text, ["get_weather"])
    assert got_content == content
    assert [(c["name"], c["args"]) for c in got_calls] == calls
    assert not invalid


def test_parse_tool_calls_reports_a_broken_call() -> None:
    _, calls, invalid = parse_tool_calls("<tool_call>{not json</tool_call>", ["get_weather"])
    assert not calls and len(invalid) == 1


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ([], "conversation is empty"),
        # LangChain reads the input before any hook runs; its own error names the accepted types.
        (
            42,
            "Invalid input type <class 'int'>. Must be a PromptValue, str, or list of BaseMessages",
        ),
        ({"question": "hi"}, "Invalid input type <class 'dict'>"),
        (
            [ChatMessage(role="critic", content="meh"), HumanMessage("hi")],
            "ChatMessage at position 0 .role 'critic'. cannot be rendered",
        ),
        (
            [HumanMessage(content=[{"type": "image", "url": "https://example.com/a.png"}])],
            "'image' content block",
        ),
        ([SystemMessage("rules only")], "no non-empty HumanMessage"),
    ],
)
def test_bad_input_is_named(chat: ChatECOHuggingFace, bad: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        chat.invoke(bad)
    with pytest.raises(ValueError, match=match):
        list(chat.stream(bad))


def test_unknown_field_is_rejected(eco: ECO) -> None:
    with pytest.raises(ValueError, match="max_new_tokens"):
        ChatECOHuggingFace(engine=eco, max_new_tokens=3)


def test_a_call_option_it_would_drop_is_refused(chat: ChatECOHuggingFace) -> None:
    with pytest.raises(InvalidInputError, match=r"mode \(did you mean eco_mode\?\)"):
        chat.invoke("How do I bake bread?", mode="off")
    with pytest.raises(InvalidInputError, match=r"max_new_tokens \(did you mean max_tokens\?\)"):
        list(chat.stream("How do I bake bread?", max_new_tokens=2))
    with pytest.raises(InvalidInputError, match="does not take the call option"):
        chat.invoke("How do I bake bread?", foo=1)
    assert chat.invoke("How do I bake bread?", max_tokens=2, eco_mode="off").content is not None


def test_bad_values_are_named_when_built_and_per_call(eco: ECO) -> None:
    from pydantic import ValidationError

    chat = ChatECOHuggingFace(engine=eco, max_tokens=2)
    with pytest.raises(InvalidInputError, match=r"Bad call option: temperature: .*\(got -1\)"):
        chat.invoke(BENIGN, temperature=-1)
    with pytest.raises(InvalidInputError, match=r"max_tokens: .*\(got 40000\)"):
        chat.invoke(BENIGN, max_tokens=40000)
    for field in ({"max_tokens": 40000}, {"seed": -1}):
        with pytest.raises(ValidationError):
            ChatECOHuggingFace(engine=eco, **field)


async def test_a_cancelled_async_stream_or_batch_stops_generating(eco: ECO) -> None:
    from support import assert_cancelling_stops_generation

    chat = ChatECOHuggingFace(engine=eco, max_tokens=200)

    async def consume() -> None:
        async for _ in chat.astream(BENIGN):
            pass

    model = eco.backend.model  # type: ignore[attr-defined]
    await assert_cancelling_stops_generation(model, consume)
    await assert_cancelling_stops_generation(model, lambda: chat.ainvoke(BENIGN))
    await assert_cancelling_stops_generation(model, lambda: chat.abatch([BENIGN, FORGET]))


def test_a_batch_reports_a_refused_input_on_that_input_only(eco: ECO) -> None:
    from eco_integrations.exceptions import ContextLengthError

    chat = ChatECOHuggingFace(engine=eco, max_tokens=2)
    alone = [chat.invoke(p).content for p in (BENIGN, FORGET)]
    out = chat.batch([BENIGN, "bread " * 400, FORGET], return_exceptions=True)
    assert isinstance(out[1], ContextLengthError) and "max_tokens" in str(out[1])
    assert [out[0].content, out[2].content] == alone
    out = chat.batch([BENIGN, "bad \ud800 text", FORGET], return_exceptions=True)
    assert isinstance(out[1], InvalidInputError) and "surrogate" in str(out[1])
    assert [out[0].content, out[2].content] == alone
    with pytest.raises(ContextLengthError):
        chat.batch([BENIGN, "bread " * 400])

"""ECOHuggingFaceLLM on the tiny random Llama and the toy guard."""

from __future__ import annotations

import threading
from typing import Any
from unittest.mock import ANY

import pytest

pytest.importorskip(
    "llama_index.core",
    reason="Install the extra to run: pip install 'eco-integrations[llamaindex]'",
)

from llama_index.core.base.llms.base import BaseLLM
from llama_index.core.base.llms.types import (
    ChatMessage,
    ImageBlock,
    MessageRole,
    TextBlock,
    ThinkingBlock,
)
from llama_index.core.prompts import PromptTemplate
from support import plain_answer

from eco_integrations import ECO, InvalidInputError
from eco_integrations._normalize import normalized_sha256
from eco_integrations.llama_index import ECODecisionEvent, ECOHuggingFaceLLM, decision_scope

HP = "Who is Harry Potter?"
BENIGN = "How do I bake bread?"


@pytest.fixture
def eco(tiny_backend, toy_guard) -> ECO:
    return ECO(tiny_backend, toy_guard)


@pytest.fixture
def llm(eco: ECO) -> ECOHuggingFaceLLM:
    return ECOHuggingFaceLLM(eco, max_new_tokens=6, expose_decision=True)


def test_is_a_llama_index_llm_with_metadata(llm: ECOHuggingFaceLLM) -> None:
    assert BaseLLM in type(llm).__mro__
    meta = llm.metadata
    assert meta.context_window == 256  # the tiny model's max_position_embeddings
    assert meta.num_output == 6
    assert meta.is_chat_model is True
    assert meta.model_name == "tiny-llama"
    assert (
        ECOHuggingFaceLLM(llm.engine, context_window=128, max_new_tokens=16).metadata.context_window
        == 128
    )


def test_needs_an_engine() -> None:
    with pytest.raises(InvalidInputError, match="from_pretrained"):
        ECOHuggingFaceLLM("tiny-llama")  # type: ignore[arg-type]


def test_benign_complete_equals_plain_model(
    llm: ECOHuggingFaceLLM, tiny_model, tiny_tokenizer
) -> None:
    response = llm.complete(BENIGN)
    decision = response.additional_kwargs["eco_decision"]
    assert decision["flagged"] is False and decision["corrupted"] is False
    assert response.text == plain_answer(
        tiny_model, tiny_tokenizer, [{"role": "user", "content": BENIGN}], 6
    )


def test_flagged_complete_is_corrupted(llm: ECOHuggingFaceLLM) -> None:
    response = llm.complete(HP)
    assert response.additional_kwargs["eco_decision"]["flagged"] is True
    assert response.additional_kwargs["eco_decision"]["corrupted"] is True
    assert response.additional_kwargs["corrupted_tokens"] > 0


def test_shadow_mode_scores_but_does_not_corrupt(eco: ECO) -> None:
    response = ECOHuggingFaceLLM(
        eco, max_new_tokens=4, mode="shadow", expose_decision=True
    ).complete(HP)
    assert response.additional_kwargs["eco_decision"]["flagged"] is True
    assert response.additional_kwargs["corrupted_tokens"] == 0


def test_stream_complete_matches_complete(llm: ECOHuggingFaceLLM) -> None:
    for prompt in (BENIGN, HP):
        full = llm.complete(prompt)
        chunks = list(llm.stream_complete(prompt))
        assert "".join(c.delta or "" for c in chunks) == full.text
        assert chunks[-1].text == full.text
        assert chunks[0].additional_kwargs["eco_decision"] == full.additional_kwargs[
            "eco_decision"
        ] | {"latency_ms": chunks[0].additional_kwargs["eco_decision"]["latency_ms"]}


def test_chat_classifies_the_latest_user_message(llm: ECOHuggingFaceLLM) -> None:
    messages = [
        ChatMessage(role=MessageRole.SYSTEM, content="You are helpful."),
        ChatMessage(role=MessageRole.USER, content=HP),
        ChatMessage(role=MessageRole.ASSISTANT, content="I do not know."),
        ChatMessage(role=MessageRole.USER, content=BENIGN),
    ]
    response = llm.chat(messages)
    decision = response.additional_kwargs["eco_decision"]
    assert decision["text_sha256"] == normalized_sha256(BENIGN)
    assert decision["flagged"] is False
    assert response.message.role == MessageRole.ASSISTANT
    streamed = list(llm.stream_chat(messages))
    assert streamed[-1].message.content == response.message.content
    flagged = llm.chat([ChatMessage(role=MessageRole.USER, content=HP)])
    assert flagged.additional_kwargs["eco_decision"]["flagged"] is True


def test_chat_reads_text_blocks_and_refuses_what_it_cannot_render(
    llm: ECOHuggingFaceLLM,
) -> None:
    # The question split over two text blocks is scored whole, as ChatMessage.content joins them.
    split = ChatMessage(
        role=MessageRole.USER, blocks=[TextBlock(text="Who is"), TextBlock(text="Harry Potter?")]
    )
    decision = llm.chat([split]).additional_kwargs["eco_decision"]
    assert decision["text_sha256"] == normalized_sha256("Who is\nHarry Potter?")
    # An assistant turn's reasoning is not rendered; its text is.
    thought = ChatMessage(
        role=MessageRole.ASSISTANT, blocks=[ThinkingBlock(content="hm"), TextBlock(text="Hello.")]
    )
    assert llm.chat([thought, ChatMessage(role=MessageRole.USER, content=BENIGN)]).message.content
    # ChatMessage.content would drop the image without a word: the model would answer half a question.
    image = ChatMessage(
        role=MessageRole.USER,
        blocks=[TextBlock(text="Who is this?"), ImageBlock(url="https://example.com/a.png")],
    )
    with pytest.raises(InvalidInputError, match=r"Message 0 .*ImageBlock.*text only"):
        llm.chat([image])
    with pytest.raises(InvalidInputError, match="ImageBlock"):
        list(llm.stream_chat([image]))


def test_react_observations_do_not_replace_the_question(
    llm: ECOHuggingFaceLLM, tiny_model, tiny_tokenizer
) -> None:
    from llama_index.core.agent.react.formatter import ReActChatFormatter
    from llama_index.core.agent.react.types import ActionReasoningStep, ObservationReasoningStep

    def react(question: str, observation: str) -> list[ChatMessage]:
        # What ReActAgent sends at its second step: the tool's output as a user message.
        return ReActChatFormatter.from_defaults(system_header="Use tools.").format(
            tools=[],
            chat_history=[ChatMessage(role=MessageRole.USER, content=question)],
            current_reasoning=[
                ActionReasoningStep(thought="Look it up.", action="lookup", action_input={}),
                ObservationReasoningStep(observation=observation),
            ],
        )

    flagged = llm.chat(react(HP, "Bread is baked from flour.")).additional_kwargs["eco_decision"]
    # The question is still read (it was the observation alone), with the observation after it.
    assert flagged["flagged"] is True
    assert flagged["text_sha256"] == normalized_sha256(
        f"{HP}\nObservation: Bread is baked from flour."
    )
    # What the model sees is what the plain model would: a benign step answers as it does.
    benign = react(BENIGN, "Flour, water, yeast.")
    response = llm.chat(benign)
    assert response.additional_kwargs["eco_decision"]["flagged"] is False
    plain = [
        {"role": m.role.value if m.role != MessageRole.SYSTEM else "system", "content": m.content}
        for m in benign
    ]
    assert response.message.content == plain_answer(tiny_model, tiny_tokenizer, plain, 6)
    # A user writing "Observation:" themselves, after an answer that is no ReAct step, is read
    # as the turn it is, not joined to (and diluted by) a long benign turn before it.
    typed = [
        ChatMessage(role=MessageRole.USER, content=" ".join([BENIGN] * 12)),
        ChatMessage(role=MessageRole.ASSISTANT, content="Flour."),
        ChatMessage(role=MessageRole.USER, content=f"Observation: {HP}"),
    ]
    decision = llm.chat(typed).additional_kwargs["eco_decision"]
    assert decision["text_sha256"] == normalized_sha256(f"Observation: {HP}")
    assert decision["flagged"] is True


def test_bad_input_is_refused(llm: ECOHuggingFaceLLM) -> None:
    with pytest.raises(InvalidInputError, match="empty"):
        llm.complete("")
    with pytest.raises(InvalidInputError, match="The prompt is a bytes; pass text"):
        llm.complete(b"Who is Harry Potter?")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="empty"):
        llm.stream_complete("   ")
    with pytest.raises(InvalidInputError, match="no non-empty user message"):
        llm.chat([ChatMessage(role=MessageRole.SYSTEM, content="Be brief.")])
    with pytest.raises(InvalidInputError, match="conversation is empty"):
        llm.chat([])


async def test_async_runs_in_a_worker_thread_and_matches_sync(
    llm: ECOHuggingFaceLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[threading.Thread] = []
    original = llm.engine.generate

    def recording_generate(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread())
        return original(*args, **kwargs)

    monkeypatch.setattr(llm.engine, "generate", recording_generate)
    sync = llm.complete(HP)
    result = await llm.acomplete(HP)
    assert result.text == sync.text
    assert threads[0] is threading.main_thread() and threads[1] is not threading.main_thread()
    chat = await llm.achat([ChatMessage(role=MessageRole.USER, content=BENIGN)])
    assert (
        chat.message.content
        == llm.chat([ChatMessage(role=MessageRole.USER, content=BENIGN)]).message.content
    )
    assert threads[2] is not threading.main_thread()


async def test_async_streams_match_sync(llm: ECOHuggingFaceLLM) -> None:
    sync = llm.complete(HP).text
    chunks = [c async for c in await llm.astream_complete(HP)]
    assert "".join(c.delta or "" for c in chunks) == sync
    assert chunks[-1].additional_kwargs["eco_decision"]["flagged"] is True
    messages = [ChatMessage(role=MessageRole.USER, content=BENIGN)]
    chat_chunks = [c async for c in await llm.astream_chat(messages)]
    assert chat_chunks[-1].message.content == llm.chat(messages).message.content


def test_predict_classifies_query_str_not_the_stuffed_prompt(
    llm: ECOHuggingFaceLLM, events: list
) -> None:
    # The way synthesizers call the LLM: the question partially formatted, the context as an argument.
    template = PromptTemplate(
        "Context: {context_str}\nQuery: {query_str}\nAnswer: "
    ).partial_format(query_str=HP)
    llm.predict(template, context_str="Bread is baked from flour, water and yeast.")
    decisions = [e for e in events if isinstance(e, ECODecisionEvent)]
    assert len(decisions) == 1
    assert decisions[0].scope == "llm"
    assert decisions[0].text_sha256 == normalized_sha256(HP)
    assert decisions[0].flagged is True
    # The same template with a benign question over Harry Potter context is not flagged.
    events.clear()
    template = PromptTemplate("Context: {context_str}\nQuery: {query_str}\nAnswer: ")
    llm.predict(template, query_str=BENIGN, context_str="Harry Potter is a wizard at Hogwarts.")
    decisions = [e for e in events if isinstance(e, ECODecisionEvent)]
    assert [d.flagged for d in decisions] == [False]
    events.clear()
    tokens = list(llm.stream(PromptTemplate("Q: {query_str}\nA: "), query_str=HP))
    decisions = [e for e in events if isinstance(e, ECODecisionEvent)]
    assert [d.flagged for d in decisions] == [True] and isinstance("".join(tokens), str)


def test_decision_scope_overrides_self_classification(llm: ECOHuggingFaceLLM, events: list) -> None:
    decision = llm.engine.decide(HP)
    with decision_scope(decision):
        response = llm.complete("Bread is baked from flour. " + BENIGN)
    assert response.additional_kwargs["eco_decision"] == decision.event_payload()
    assert not [e for e in events if isinstance(e, ECODecisionEvent)]  # no second classification


def test_llm_event_holds_no_prompt_text(llm: ECOHuggingFaceLLM, events: list) -> None:
    llm.complete(HP)
    (event,) = [e for e in events if isinstance(e, ECODecisionEvent)]
    assert event.flagged is True and event.score is not None and event.threshold is not None
    assert event.target == "harry-potter" and event.mode == "enforce"
    assert event.policy_version == llm.engine.policy_version
    assert "Harry" not in event.model_dump_json()


def test_threshold_override(eco: ECO, tiny_model, tiny_tokenizer) -> None:
    score = eco.decide(HP).score
    assert score is not None
    lenient = ECOHuggingFaceLLM(
        eco, max_new_tokens=6, threshold=min(score + 0.01, 0.999), expose_decision=True
    )
    response = lenient.complete(HP)
    assert response.additional_kwargs["eco_decision"]["flagged"] is False
    assert response.text == plain_answer(
        tiny_model, tiny_tokenizer, [{"role": "user", "content": HP}], 6
    )
    strict = ECOHuggingFaceLLM(eco, max_new_tokens=6, threshold=0.0, expose_decision=True)
    decision = strict.complete(BENIGN).additional_kwargs["eco_decision"]
    assert decision["flagged"] is True and decision["threshold"] == 0.0


def test_stream_reports_usage_after_the_last_chunk(llm: ECOHuggingFaceLLM) -> None:
    full = llm.complete(BENIGN)
    chunks = list(llm.stream_complete(BENIGN))
    assert chunks[-1].text == full.text
    assert (
        chunks[-1].additional_kwargs["completion_tokens"]
        == full.additional_kwargs["completion_tokens"]
    )
    assert chunks[-1].additional_kwargs["finish_reason"] == full.additional_kwargs["finish_reason"]


def test_call_options_are_honoured_or_refused(eco: ECO) -> None:
    llm = ECOHuggingFaceLLM(eco, max_new_tokens=8, temperature=1.0)
    # max_tokens (what other LLMs call it) and GenerationConfig's names are honoured per call.
    # Greedy here: a sampled first token of the random model is EOS once in ~400 calls, and an
    # answer that ends at once has no tokens to count.
    greedy_one = llm.complete(BENIGN, max_tokens=1, temperature=0.0)
    assert greedy_one.additional_kwargs["completion_tokens"] == 1
    assert llm.complete(BENIGN, max_new_tokens=2).additional_kwargs["completion_tokens"] <= 2
    # A per-call seed makes a sampled answer repeat, as the field does.
    assert llm.complete(BENIGN, seed=7).text == llm.complete(BENIGN, seed=7).text
    assert llm.complete(BENIGN, tools=None, temperature=0.0).text  # LlamaIndex itself may pass it
    with pytest.raises(InvalidInputError, match="does not take mode per call"):
        llm.complete(HP, mode="off")
    with pytest.raises(InvalidInputError, match=r"does not take the call option.*bogus"):
        llm.chat([ChatMessage(role=MessageRole.USER, content=HP)], bogus=1)
    with pytest.raises(InvalidInputError, match="not a function-calling model"):
        llm.complete(HP, tools=[{"name": "lookup"}])


def test_fields_it_would_ignore_are_refused(eco: ECO) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="max_tokens"):
        ECOHuggingFaceLLM(eco, max_tokens=3)
    with pytest.raises(ValidationError, match="on_guard_error"):
        ECOHuggingFaceLLM(eco, on_guard_error="corrupt")
    with pytest.raises(InvalidInputError, match="completion_to_prompt would not be used"):
        ECOHuggingFaceLLM(eco, completion_to_prompt=lambda p: f"<s>{p}")
    assert ECOHuggingFaceLLM(eco, top_k=5, repetition_penalty=1.1).top_k == 5


def test_raw_completion_keeps_the_system_prompt(eco: ECO, monkeypatch: pytest.MonkeyPatch) -> None:
    llm = ECOHuggingFaceLLM(eco, max_new_tokens=2, raw_completion=True, system_prompt="Be brief.")
    seen: list[Any] = []
    original = eco.prepare
    monkeypatch.setattr(
        eco, "prepare", lambda prompt, **kw: seen.append(prompt) or original(prompt, **kw)
    )
    llm.complete(BENIGN)
    assert seen == [f"Be brief.\n\n{BENIGN}"]  # as LlamaIndex's predict() extends a prompt


def test_structured_predict_classifies_the_question(llm: ECOHuggingFaceLLM, events: list) -> None:
    from pydantic import BaseModel

    class Answer(BaseModel):
        text: str

    template = PromptTemplate("Context: Harry Potter is a wizard.\nQ: {query_str}\nA: ")
    with pytest.raises(
        ValueError, match="Could not extract json"
    ):  # a tiny random model writes no JSON
        llm.structured_predict(Answer, template, query_str=BENIGN)
    decisions = [e for e in events if isinstance(e, ECODecisionEvent)]
    # One decision, on the question (the stuffed prompt holds the forget target's name).
    assert [d.text_sha256 for d in decisions] == [normalized_sha256(BENIGN)]


def test_bad_per_call_values_are_named(llm: ECOHuggingFaceLLM) -> None:
    with pytest.raises(InvalidInputError, match=r"Bad call option: temperature: .*\(got -1\)"):
        llm.complete(BENIGN, temperature=-1)


def test_classify_window_reads_a_question_split_over_two_turns(eco: ECO) -> None:
    split = [
        ChatMessage(role=MessageRole.USER, content="Tell me about Harry"),
        ChatMessage(role=MessageRole.ASSISTANT, content="Which one?"),
        ChatMessage(role=MessageRole.USER, content="Potter."),
    ]
    one = (
        ECOHuggingFaceLLM(eco, max_new_tokens=2, expose_decision=True)
        .chat(split)
        .additional_kwargs["eco_decision"]
    )
    two = ECOHuggingFaceLLM(eco, max_new_tokens=2, classify_window=2, expose_decision=True)
    decision = two.chat(split).additional_kwargs["eco_decision"]
    assert decision["text_sha256"] == normalized_sha256("Tell me about Harry\nPotter.")
    assert one["text_sha256"] == normalized_sha256("Potter.")
    assert decision["policy_version"] != one["policy_version"]
    assert two.engine.policy.classify_window == 2 and eco.policy.classify_window == 1
    # A copy with another window, and an assignment, decide with it (the engine follows the field).
    base = ECOHuggingFaceLLM(eco, max_new_tokens=2, expose_decision=True)
    copied = base.model_copy(update={"classify_window": 2})
    assert copied.chat(split).additional_kwargs["eco_decision"] == {
        **decision,
        "latency_ms": ANY,
    }
    assert base.chat(split).additional_kwargs["eco_decision"]["text_sha256"] == one["text_sha256"]
    base.classify_window = 2
    assert base.engine.policy.classify_window == 2
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="classify_window"):
        base.classify_window = 0


def test_token_counting_handler_counts_the_model_s_tokens(eco: ECO) -> None:
    from llama_index.core.callbacks import CallbackManager, TokenCountingHandler

    # A tokenizer that would count otherwise (words): the counts must be the model's own.
    counter = TokenCountingHandler(tokenizer=lambda text: text.split())
    llm = ECOHuggingFaceLLM(
        eco, max_new_tokens=5, temperature=0.0, callback_manager=CallbackManager([counter])
    )
    chat = [ChatMessage(role=MessageRole.USER, content=BENIGN)]
    for answer in (llm.complete(BENIGN), llm.chat(chat), list(llm.stream_complete(BENIGN))[-1]):
        counted = counter.llm_token_counts[-1]
        usage = (
            answer.additional_kwargs["prompt_tokens"],
            answer.additional_kwargs["completion_tokens"],
        )
        assert (counted.prompt_token_count, counted.completion_token_count) == usage
        assert usage[1] > 0


def test_settings_that_cannot_work_are_refused_when_built(
    eco: ECO, tiny_model, tiny_tokenizer
) -> None:
    from eco_integrations import ConfigurationError

    window = eco.backend.context_window
    with pytest.raises(ConfigurationError, match=f"max_new_tokens={window} leaves no room"):
        ECOHuggingFaceLLM(eco, max_new_tokens=window)
    with pytest.raises(ConfigurationError, match=r"max_new_tokens=64 leaves no room.*64-token"):
        ECOHuggingFaceLLM(eco, max_new_tokens=64, context_window=64)
    # Arguments swapped, or not a model at all: named before anything runs.
    with pytest.raises(
        ConfigurationError, match=r"model is a .*Tokenizer.*not a transformers causal LM"
    ):
        ECOHuggingFaceLLM.from_model(tiny_tokenizer, tiny_model)
    with pytest.raises(ConfigurationError, match="tokenizer is a NoneType"):
        ECOHuggingFaceLLM.from_model(tiny_model, None)
    with pytest.raises(ConfigurationError, match="model is a str"):
        ECOHuggingFaceLLM.from_model("x", "y")


async def test_a_cancelled_async_call_stops_generating(eco: ECO) -> None:
    from support import assert_cancelling_stops_generation

    llm = ECOHuggingFaceLLM(eco, max_new_tokens=200)
    chat = [ChatMessage(role=MessageRole.USER, content=BENIGN)]
    model = eco.backend.model  # type: ignore[attr-defined]
    await assert_cancelling_stops_generation(model, lambda: llm.acomplete(BENIGN))
    await assert_cancelling_stops_generation(model, lambda: llm.achat(chat))


def test_a_stop_string_is_one_sequence(eco: ECO) -> None:
    llm = ECOHuggingFaceLLM(eco, max_new_tokens=12)
    full = llm.complete(BENIGN).text
    first = next(ch for ch in full[1:] if ch.strip())
    assert first not in llm.complete(BENIGN, stop=[first]).text
    # A string is one sequence, not one per character (which would cut at ``first``).
    assert llm.complete(BENIGN, stop=first + "\u2603\u2603").text == full

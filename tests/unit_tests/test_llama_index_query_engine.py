"""ECOQueryEngine: one decision per query, carried through every LLM call (tiny model, toy guard)."""

from __future__ import annotations

from typing import Any
from unittest.mock import ANY

import pytest

pytest.importorskip(
    "llama_index.core",
    reason="Install the extra to run: pip install 'eco-integrations[llamaindex]'",
)

from llama_index.core import Document, PromptTemplate, Settings, VectorStoreIndex
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.base.response.schema import AsyncStreamingResponse, StreamingResponse
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation.events.llm import LLMChatStartEvent
from llama_index.core.query_engine import CustomQueryEngine
from llama_index.core.schema import QueryBundle
from support import plain_answer

from eco_integrations import ECO, ConfigurationError, Decision, InvalidInputError
from eco_integrations._normalize import normalized_sha256
from eco_integrations.llama_index import (
    ECODecisionEvent,
    ECOHuggingFaceLLM,
    ECOQueryEngine,
    active_decision,
)

HP = "Who is Harry Potter?"
BENIGN = "How do I bake bread?"
DOCS = ["Bread is baked from flour.", "Paris is the capital of France.", "Gandalf is a wizard."]
# Short templates: the tiny model's real context window is 256 tokens.
QA = PromptTemplate("Context: {context_str}\nQ: {query_str}\nA: ")
REFINE = PromptTemplate("Q: {query_str}\nSo far: {existing_answer}\nMore: {context_msg}\nA: ")


@pytest.fixture
def eco(tiny_backend, toy_guard) -> ECO:
    return ECO(tiny_backend, toy_guard)


@pytest.fixture
def llm(eco: ECO) -> ECOHuggingFaceLLM:
    # The metadata window is widened so the refine synthesizer's 512-token response padding
    # fits; the engine still refuses any prompt longer than the model's real 256 tokens.
    return ECOHuggingFaceLLM(eco, max_new_tokens=5, context_window=2048, expose_decision=True)


@pytest.fixture
def index() -> VectorStoreIndex:
    return VectorStoreIndex.from_documents(
        [Document(text=t) for t in DOCS], embed_model=MockEmbedding(embed_dim=8)
    )


@pytest.fixture
def counter(eco: ECO, monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """Counts classifications (every engine decision goes through decide_texts) and generations."""
    import eco_integrations.engine as engine_module

    calls: dict[str, list] = {"decide": [], "generate": [], "render": []}
    decide, generate, stream, render = (
        eco.decide_texts,
        eco.generate,
        eco.stream,
        engine_module.render,
    )

    def counted_decide(texts: Any, **kwargs: Any) -> list[Decision]:
        calls["decide"].append(list(texts))
        return decide(texts, **kwargs)

    def counted_generate(requests: Any, **kwargs: Any) -> Any:
        calls["generate"].append([r.decision for r in requests])
        return generate(requests, **kwargs)

    def counted_stream(request: Any, **kwargs: Any) -> Any:
        calls["generate"].append([request.decision])
        return stream(request, **kwargs)

    def counted_render(*args: Any, **kwargs: Any) -> Any:
        calls["render"].append(1)
        return render(*args, **kwargs)

    monkeypatch.setattr(engine_module, "render", counted_render)
    monkeypatch.setattr(eco, "decide_texts", counted_decide)
    monkeypatch.setattr(eco, "generate", counted_generate)
    monkeypatch.setattr(eco, "stream", counted_stream)
    return calls


def _engine(index: VectorStoreIndex, llm: ECOHuggingFaceLLM, **kwargs: Any) -> ECOQueryEngine:
    inner = index.as_query_engine(
        llm=llm, similarity_top_k=3, text_qa_template=QA, refine_template=REFINE, **kwargs
    )
    return ECOQueryEngine(inner, llm, attach_decision=True)


def _no_latency(payload: dict) -> dict:
    return {k: v for k, v in payload.items() if k != "latency_ms"}


def test_works_as_settings_llm_in_a_vector_index_query(
    llm: ECOHuggingFaceLLM, index: VectorStoreIndex, tiny_model, tiny_tokenizer, events: list
) -> None:
    previous = Settings._llm
    Settings.llm = llm
    try:
        response = index.as_query_engine(similarity_top_k=1, text_qa_template=QA).query(BENIGN)
    finally:
        Settings._llm = previous
    (chat,) = [e for e in events if isinstance(e, LLMChatStartEvent)]
    messages = [{"role": m.role.value, "content": m.content} for m in chat.messages]
    assert "Context:" in messages[-1]["content"]  # the LLM really got the stuffed RAG prompt
    # Benign: the answer is exactly what the unmodified model says to that prompt.
    assert response.response == plain_answer(tiny_model, tiny_tokenizer, messages, 5)


def test_benign_query_equals_plain_model(
    llm: ECOHuggingFaceLLM,
    index: VectorStoreIndex,
    tiny_model,
    tiny_tokenizer,
    events: list,
) -> None:
    response = _engine(index, llm, response_mode="compact").query(BENIGN)
    assert response.metadata["eco_decision"]["flagged"] is False
    (chat,) = [e for e in events if isinstance(e, LLMChatStartEvent)]
    messages = [{"role": m.role.value, "content": m.content} for m in chat.messages]
    assert response.response == plain_answer(tiny_model, tiny_tokenizer, messages, 5)


@pytest.mark.parametrize("streaming", [False, True])
def test_one_decision_per_query_in_refine_mode(
    llm: ECOHuggingFaceLLM, index: VectorStoreIndex, counter: dict, streaming: bool
) -> None:
    engine = _engine(index, llm, response_mode="refine", streaming=streaming)
    response = engine.query(HP)
    if streaming:
        assert isinstance(response, StreamingResponse)
        "".join(response.response_gen)  # the last refine call runs while the stream is consumed
    assert counter["decide"] == [[HP]]  # classified once, on the question alone
    assert len(counter["generate"]) == len(DOCS)  # refine called the LLM once per node
    assert len(counter["render"]) == len(DOCS)  # ... and each LLM request was rendered once
    (decision,) = {
        d[0] for d in counter["generate"]
    }  # ... and every call reused the query's decision
    assert decision.flagged and decision.corrupted
    assert response.metadata["eco_decision"] == decision.event_payload()


def test_tree_summarize_reuses_the_decision(
    llm: ECOHuggingFaceLLM, index: VectorStoreIndex, counter: dict
) -> None:
    from llama_index.core.response_synthesizers import TreeSummarize

    # A small chunk limit keeps the three nodes from packing into one prompt, so the tree has
    # leaves and a root; one-token summaries let it converge.
    short = ECOHuggingFaceLLM(llm.engine, max_new_tokens=1, context_window=2048)
    synthesizer = TreeSummarize(llm=short, summary_template=QA)
    synthesizer._prompt_helper.chunk_size_limit = 12
    inner = index.as_query_engine(llm=short, similarity_top_k=3, response_synthesizer=synthesizer)
    ECOQueryEngine(inner, short).query(BENIGN)
    assert counter["decide"] == [[BENIGN]]
    assert len(counter["generate"]) >= 2
    assert len({d[0] for d in counter["generate"]}) == 1


async def test_async_and_streaming_make_the_same_decision(
    llm: ECOHuggingFaceLLM, index: VectorStoreIndex
) -> None:
    for question in (HP, BENIGN):
        sync = _engine(index, llm, response_mode="refine").query(question)
        stream = _engine(index, llm, response_mode="refine", streaming=True).query(question)
        stream_text = "".join(stream.response_gen)
        asynchronous = await _engine(index, llm, response_mode="refine").aquery(question)
        astream = await _engine(index, llm, response_mode="refine", streaming=True).aquery(question)
        assert isinstance(astream, AsyncStreamingResponse)
        astream_text = "".join([t async for t in astream.response_gen])
        expected = _no_latency(sync.metadata["eco_decision"])
        for other in (stream, asynchronous, astream):
            assert _no_latency(other.metadata["eco_decision"]) == expected
        # Greedy decoding with the same decision gives the same answer on every path.
        assert stream_text == asynchronous.response == astream_text == sync.response


async def test_async_query_scope_reaches_worker_threads(
    llm: ECOHuggingFaceLLM, index: VectorStoreIndex, counter: dict
) -> None:
    await _engine(index, llm, response_mode="refine").aquery(HP)
    assert counter["decide"] == [[HP]]
    assert len(counter["generate"]) == len(DOCS)
    assert all(d[0].flagged for d in counter["generate"])
    assert active_decision() is None  # the scope does not leak out of the query


def test_decision_event_is_nested_under_the_query_span(
    llm: ECOHuggingFaceLLM, index: VectorStoreIndex, events: list
) -> None:
    _engine(index, llm).query(HP)
    (event,) = [e for e in events if isinstance(e, ECODecisionEvent)]
    assert event.scope == "query"
    assert event.span_id is not None and event.span_id.startswith("ECOQueryEngine.")
    assert event.flagged and event.corrupted and event.target == "harry-potter"
    assert event.threshold is not None and event.score is not None and event.score > event.threshold
    assert event.mode == "enforce" and event.policy_version == llm.engine.policy_version
    assert event.text_sha256 == normalized_sha256(HP)
    assert "Harry" not in event.model_dump_json()


def test_wraps_a_custom_query_engine(llm: ECOHuggingFaceLLM, counter: dict) -> None:
    class TwoCalls(CustomQueryEngine):
        """Calls the LLM twice with context-stuffed prompts that never mention the question's topic."""

        llm: ECOHuggingFaceLLM

        def custom_query(self, query_str: str) -> str:
            first = self.llm.complete("Bread is baked from flour. Summarise.")
            second = self.llm.complete("Paris is in France. " + query_str)
            assert (
                first.additional_kwargs["eco_decision"] == second.additional_kwargs["eco_decision"]
            )
            return second.text

    response = ECOQueryEngine(TwoCalls(llm=llm), llm, attach_decision=True).query(HP)
    assert counter["decide"] == [[HP]]
    assert len(counter["generate"]) == 2
    assert response.metadata["eco_decision"]["flagged"] is True


def test_shadow_mode_on_the_wrapper(
    llm: ECOHuggingFaceLLM, index: VectorStoreIndex, counter: dict
) -> None:
    engine = ECOQueryEngine(
        index.as_query_engine(llm=llm, similarity_top_k=1, text_qa_template=QA),
        llm,
        mode="shadow",
        attach_decision=True,
    )
    response = engine.query(HP)
    assert response.metadata["eco_decision"]["flagged"] is True
    assert response.metadata["eco_decision"]["corrupted"] is False
    assert counter["generate"][0][0].corrupted is False


@pytest.mark.parametrize(
    "query", ["", "   ", QueryBundle(query_str=""), QueryBundle(query_str="", embedding=[0.1] * 8)]
)
def test_empty_queries_are_refused_before_any_llm_call(
    llm: ECOHuggingFaceLLM, index: VectorStoreIndex, counter: dict, query: Any
) -> None:
    with pytest.raises(InvalidInputError, match=r"empty|no text"):
        _engine(index, llm).query(query)
    assert counter["generate"] == []


async def test_empty_async_query_is_refused(
    llm: ECOHuggingFaceLLM, index: VectorStoreIndex
) -> None:
    with pytest.raises(InvalidInputError, match="no text"):
        await _engine(index, llm).aquery(QueryBundle(query_str=""))


def test_constructor_checks_its_arguments(llm: ECOHuggingFaceLLM, index: VectorStoreIndex) -> None:
    with pytest.raises(InvalidInputError, match="as_query_engine"):
        ECOQueryEngine(index, llm)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="ECO engine"):
        ECOQueryEngine(index.as_query_engine(llm=llm), "guard")  # type: ignore[arg-type]
    from llama_index.core.llms import MockLLM

    # Another LLM would answer a flagged question in full under a "corrupted" decision.
    with pytest.raises(InvalidInputError, match="answers with MockLLM, which ignores"):
        ECOQueryEngine(index.as_query_engine(llm=MockLLM()), llm)
    with pytest.raises(ConfigurationError, match="Unknown mode 'enforced'"):
        ECOQueryEngine(index.as_query_engine(llm=llm), llm, mode="enforced")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="threshold is a probability"):
        ECOQueryEngine(index.as_query_engine(llm=llm), llm, threshold=5)
    with pytest.raises(InvalidInputError, match="from_index needs llm=ECOHuggingFaceLLM"):
        ECOQueryEngine.from_index(index, llm=llm.engine)  # type: ignore[arg-type]


def test_from_index_adds_the_node_filter(llm: ECOHuggingFaceLLM, index: VectorStoreIndex) -> None:
    from eco_integrations.llama_index import ECONodeFilter

    engine = ECOQueryEngine.from_index(
        index, llm=llm, attach_decision=True, similarity_top_k=2, text_qa_template=QA
    )
    filters = [p for p in engine.query_engine._node_postprocessors if isinstance(p, ECONodeFilter)]
    assert len(filters) == 1 and filters[0].action == "drop"
    assert engine.query(BENIGN).metadata["eco_decision"]["flagged"] is False


@pytest.fixture
def forget_only_index() -> VectorStoreIndex:
    """Every node is about the forget target, so the node filter drops all of them."""
    return VectorStoreIndex.from_documents(
        [Document(text="Harry Potter is a wizard at Hogwarts.")],
        embed_model=MockEmbedding(embed_dim=8),
    )


def test_a_fully_dropped_context_is_answered_without_context(
    llm: ECOHuggingFaceLLM, forget_only_index: VectorStoreIndex, counter: dict, events: list
) -> None:
    engine = ECOQueryEngine.from_index(
        forget_only_index, llm=llm, attach_decision=True, text_qa_template=QA
    )
    response = engine.query(HP)
    # The model answered (corrupted), where LlamaIndex alone would say "Empty Response".
    assert response.response != "Empty Response" and response.response.strip()
    assert response.source_nodes == []
    assert [[d.flagged for d in call] for call in counter["generate"]] == [[True]]
    (chat,) = [e for e in events if isinstance(e, LLMChatStartEvent)]
    assert "Hogwarts" not in chat.messages[-1].content  # the dropped node never reached it
    # No trace of the empty context node either: the metadata lists no node.
    assert list(response.metadata) == ["eco_decision"]
    assert response.metadata["eco_decision"]["flagged"] is True


async def test_a_fully_dropped_context_is_answered_without_context_async(
    llm: ECOHuggingFaceLLM, forget_only_index: VectorStoreIndex, counter: dict
) -> None:
    engine = ECOQueryEngine.from_index(
        forget_only_index, llm=llm, attach_decision=True, text_qa_template=QA
    )
    response = await engine.aquery(HP)
    assert response.response != "Empty Response" and response.source_nodes == []
    assert list(response.metadata) == ["eco_decision"]
    assert [[d.flagged for d in call] for call in counter["generate"]] == [[True]]
    # aretrieve reaches the wrapped engine's, with the same nodes as retrieve.
    bundle = QueryBundle(HP)
    retrieved = await engine.aretrieve(bundle)
    assert [n.node.node_id for n in retrieved] == [n.node.node_id for n in engine.retrieve(bundle)]
    with pytest.raises(InvalidInputError, match="query_str is empty"):
        await engine.aretrieve(QueryBundle(""))


def test_answer_without_context_can_be_switched_off(
    llm: ECOHuggingFaceLLM, forget_only_index: VectorStoreIndex, counter: dict
) -> None:
    engine = ECOQueryEngine.from_index(
        forget_only_index, llm=llm, text_qa_template=QA, answer_without_context=False
    )
    assert engine.query(HP).response == "Empty Response"
    assert counter["generate"] == []


def test_an_empty_retrieval_is_left_as_llama_index_answers_it(
    llm: ECOHuggingFaceLLM, counter: dict
) -> None:
    # Nothing was dropped (the retriever found nothing): the plain pipeline's answer stands.
    empty = VectorStoreIndex.from_documents([], embed_model=MockEmbedding(embed_dim=8))
    engine = ECOQueryEngine.from_index(empty, llm=llm, attach_decision=True, text_qa_template=QA)
    assert engine.query(BENIGN).response == "Empty Response"
    assert counter["generate"] == []


def test_a_marked_context_is_corrupted_whole(
    llm: ECOHuggingFaceLLM, forget_only_index: VectorStoreIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With action="mark" the flagged node stays in the prompt: corrupting only the question's
    # names would leave its facts readable, so every content token is selected instead.
    selections: list[str] = []
    generate = ECO.generate

    def spy(self: ECO, requests: Any, **kwargs: Any) -> Any:
        selections.append(self.policy.selection.name)
        return generate(self, requests, **kwargs)

    monkeypatch.setattr(ECO, "generate", spy)
    assert llm.engine.policy.selection.name == "entities"
    engine = ECOQueryEngine.from_index(
        forget_only_index, llm=llm, text_qa_template=QA, node_filter="mark", attach_decision=True
    )
    response = engine.query(BENIGN)
    assert response.metadata["eco_decision"]["flagged"] is True  # escalated by the node
    assert selections == ["content"]
    selections.clear()
    ECOQueryEngine.from_index(
        forget_only_index, llm=llm, attach_decision=True, text_qa_template=QA
    ).query(HP)
    assert selections == ["entities"]  # dropped, not marked: the question's names suffice
    # retrieve() then synthesize(), as a pipeline that looks at the nodes in between: the marks
    # the filter left on the nodes escalate the synthesis, as within one query.
    selections.clear()
    engine = ECOQueryEngine.from_index(
        forget_only_index, llm=llm, text_qa_template=QA, node_filter="mark", attach_decision=True
    )
    nodes = engine.retrieve(QueryBundle(BENIGN))
    assert nodes[0].node.metadata["eco_threshold"] == pytest.approx(
        response.metadata["eco_decision"]["threshold"]
    )
    split = engine.synthesize(QueryBundle(BENIGN), nodes)
    assert split.metadata["eco_decision"] == {
        **response.metadata["eco_decision"],
        "latency_ms": ANY,
    }
    assert selections == ["content"]


def test_the_decision_is_not_in_responses_unless_asked_for(
    eco: ECO, index: VectorStoreIndex, events: list
) -> None:
    # An app forwarding response metadata must not tell its users which topics are protected.
    llm = ECOHuggingFaceLLM(eco, max_new_tokens=2, context_window=2048)
    for response in (llm.complete(HP), llm.chat([ChatMessage(role=MessageRole.USER, content=HP)])):
        assert "eco_decision" not in response.additional_kwargs
        assert "corrupted_tokens" not in response.additional_kwargs
    *_, last = llm.stream_complete(HP)
    assert not {"eco_decision", "corrupted_tokens"} & set(last.additional_kwargs)
    response = ECOQueryEngine.from_index(index, llm=llm, text_qa_template=QA).query(HP)
    assert "eco_decision" not in (response.metadata or {})
    # The operator still sees every decision, as an event.
    assert any(isinstance(e, ECODecisionEvent) and e.flagged for e in events)

"""ECONodeFilter: retrieved context about a forget target is dropped or marked (toy guard)."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip(
    "llama_index.core",
    reason="Install the extra to run: pip install 'eco-integrations[llamaindex]'",
)

from llama_index.core import Document, PromptTemplate, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.instrumentation.events.llm import LLMChatStartEvent
from llama_index.core.schema import ImageNode, MetadataMode, NodeWithScore, QueryBundle, TextNode

from eco_integrations import ECO, ConfigurationError
from eco_integrations.llama_index import (
    ECODecisionEvent,
    ECOHuggingFaceLLM,
    ECONodeFilter,
    ECONodeFilterEvent,
    ECOQueryEngine,
    decision_scope,
)

HP_FACT = "Harry Potter is a wizard at Hogwarts."
BREAD = "Bread is baked from flour, water, yeast and salt."
QA = PromptTemplate("Context: {context_str}\nQ: {query_str}\nA: ")


class _KeywordEmbedding(BaseEmbedding):
    """Retrieval by a shared keyword, so a test controls exactly which node a question retrieves."""

    def _vector(self, text: str) -> list[float]:
        words = ("school", "bread", "paris")
        return [1.0 if w in text.lower() else 0.0 for w in words] + [0.1]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._vector(text)


def _nodes(*texts: str) -> list[NodeWithScore]:
    return [
        NodeWithScore(node=TextNode(text=t, id_=f"n{i}"), score=1.0) for i, t in enumerate(texts)
    ]


def test_drops_nodes_about_the_forget_target(toy_guard, events: list) -> None:
    kept = ECONodeFilter(toy_guard).postprocess_nodes(
        _nodes(BREAD, HP_FACT, "Paris is the capital of France.")
    )
    assert [n.node.node_id for n in kept] == ["n0", "n2"]
    (event,) = [e for e in events if isinstance(e, ECONodeFilterEvent)]
    assert (event.n_nodes, event.n_scored, event.n_flagged, event.n_dropped) == (3, 3, 1, 1)
    assert event.flagged_node_ids == ["n1"]
    assert "Hogwarts" not in event.model_dump_json()


def test_a_forget_sentence_inside_a_long_node_is_caught(toy_guard) -> None:
    long_node = " ".join(
        [BREAD, "Paris is the capital of France.", "Explain photosynthesis to me.", HP_FACT]
    )
    node_filter = ECONodeFilter(toy_guard)
    assert node_filter.postprocess_nodes(_nodes(long_node)) == []
    whole = node_filter.score_nodes(_nodes(long_node))[0]
    assert whole is not None and whole.flagged


def test_mark_keeps_nodes_and_escalates_the_query_decision(
    toy_guard, tiny_backend, events: list
) -> None:
    eco = ECO(tiny_backend, toy_guard)
    question = eco.decide_texts(["Tell me about this school."])[0]
    assert not question.flagged
    with decision_scope(question) as scope:
        kept = ECONodeFilter(toy_guard, action="mark").postprocess_nodes(_nodes(BREAD, HP_FACT))
    assert len(kept) == 2
    marked = kept[1].node
    assert (
        marked.metadata["eco_flagged"] is True and marked.metadata["eco_target"] == "harry-potter"
    )
    # The marks steer the pipeline; they are not shown to the LLM.
    assert "eco_flagged" not in marked.get_content(metadata_mode=MetadataMode.LLM)
    assert "eco_flagged" not in kept[0].node.metadata
    assert scope.decision.flagged and scope.decision.corrupted
    assert scope.decision.text_sha256 == question.text_sha256
    assert [e.scope for e in events if isinstance(e, ECODecisionEvent)] == ["node"]


def test_shadow_mode_changes_nothing(toy_guard, events: list) -> None:
    nodes = _nodes(BREAD, HP_FACT)
    kept = ECONodeFilter(toy_guard, mode="shadow").postprocess_nodes(nodes)
    assert kept == nodes and "eco_flagged" not in nodes[1].node.metadata
    (event,) = [e for e in events if isinstance(e, ECONodeFilterEvent)]
    assert event.n_flagged == 1 and event.n_dropped == 0


def test_nodes_without_text_are_kept_unscored(
    toy_guard, events: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = [
        NodeWithScore(node=TextNode(text="", id_="empty")),
        NodeWithScore(node=TextNode(text="  \n", id_="blank")),
        NodeWithScore(node=TextNode(text="\u200b\u200b", id_="invisible")),
        NodeWithScore(node=ImageNode(image="aGVsbG8=", id_="image")),
    ]
    node_filter = ECONodeFilter(toy_guard)
    kept = node_filter.postprocess_nodes(empty + _nodes(HP_FACT))
    assert [n.node.node_id for n in kept] == ["empty", "blank", "invisible", "image"]
    (event,) = [e for e in events if isinstance(e, ECONodeFilterEvent)]
    assert (event.n_nodes, event.n_scored, event.n_dropped) == (5, 1, 1)

    def guard_must_not_run(texts: Any) -> Any:
        raise AssertionError("the guard was called without any text")

    monkeypatch.setattr(toy_guard, "decide_many", guard_must_not_run)
    assert node_filter.postprocess_nodes(empty) == empty
    assert node_filter.postprocess_nodes([]) == []


def test_needs_a_guard() -> None:
    with pytest.raises(ConfigurationError, match="Guard"):
        ECONodeFilter("harry-potter")  # type: ignore[arg-type]


async def test_async_postprocess_matches_sync(toy_guard) -> None:
    kept = await ECONodeFilter(toy_guard).apostprocess_nodes(
        _nodes(BREAD, HP_FACT), QueryBundle("bread?")
    )
    assert [n.node.node_id for n in kept] == ["n0"]


@pytest.mark.parametrize("with_filter", [False, True])
def test_benign_question_cannot_pull_the_forgotten_fact_into_the_prompt(
    toy_guard,
    tiny_backend,
    events: list,
    with_filter: bool,
) -> None:
    eco = ECO(tiny_backend, toy_guard)
    llm = ECOHuggingFaceLLM(eco, max_new_tokens=4, context_window=2048)
    index = VectorStoreIndex.from_documents(
        [
            Document(text="Hogwarts is the school where Harry Potter is a wizard."),
            Document(text=BREAD),
        ],
        embed_model=_KeywordEmbedding(),
    )
    question = "What happens at that school?"  # benign-looking; retrieves the Hogwarts node
    postprocessors = [ECONodeFilter(toy_guard)] if with_filter else []
    inner = index.as_query_engine(
        llm=llm, similarity_top_k=1, text_qa_template=QA, node_postprocessors=postprocessors
    )
    response = ECOQueryEngine(inner, llm, attach_decision=True).query(question)
    assert (
        response.metadata["eco_decision"]["flagged"] is False
    )  # the question alone looks harmless
    prompts = " ".join(
        m.content or "" for e in events if isinstance(e, LLMChatStartEvent) for m in e.messages
    )
    leaked = "Harry Potter" in prompts
    # Without the filter the retriever hands the model the fact; with it, the fact never reaches the prompt.
    assert leaked is not with_filter
    assert all("Harry" not in n.node.get_content() for n in response.source_nodes) is with_filter


def test_a_bare_string_among_the_nodes_is_named(toy_guard) -> None:
    from eco_integrations import InvalidInputError

    with pytest.raises(InvalidInputError, match=r"nodes\[0\] is str, not a NodeWithScore"):
        ECONodeFilter(toy_guard).postprocess_nodes(["Harry Potter lives at Privet Drive."])


def test_decides_nodes_as_the_engine_decides_prompts(
    toy_guard, tiny_backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eco_integrations import ECOPolicy, GuardFailureError

    bread_score = toy_guard.decide(BREAD).score
    # The engine's policy threshold applies to nodes as to prompts (the guard's alone did before).
    strict = ECO(tiny_backend, toy_guard, policy=ECOPolicy(threshold=bread_score - 1e-6))
    assert ECONodeFilter(toy_guard).postprocess_nodes(_nodes(BREAD))
    assert ECONodeFilter(strict).postprocess_nodes(_nodes(BREAD)) == []
    assert ECONodeFilter(engine=strict, threshold=0.999).postprocess_nodes(_nodes(BREAD))
    assert ECONodeFilter(toy_guard, threshold=0.0).postprocess_nodes(_nodes(BREAD)) == []
    # off passes the nodes unscored; shadow scores and keeps; the engine's mode is the default.
    assert len(ECONodeFilter(toy_guard, mode="off").postprocess_nodes(_nodes(HP_FACT))) == 1
    shadow = ECO(tiny_backend, toy_guard, mode="shadow")
    assert len(ECONodeFilter(shadow).postprocess_nodes(_nodes(HP_FACT))) == 1
    assert ECONodeFilter(shadow, mode="enforce").postprocess_nodes(_nodes(HP_FACT)) == []
    # A failing guard fails the retrieval (closed), with an engine or without one.
    monkeypatch.setattr(
        toy_guard,
        "decide_many",
        lambda texts, **kw: [
            d.model_copy(update={"score": float("nan")}) for d in Guard_decide(toy_guard, texts)
        ],
    )
    for node_filter in (ECONodeFilter(toy_guard), ECONodeFilter(ECO(tiny_backend, toy_guard))):
        with pytest.raises(GuardFailureError, match="guard failed"):
            node_filter.postprocess_nodes(_nodes(HP_FACT))


def Guard_decide(guard: Any, texts: list[str]) -> list[Any]:
    from eco_integrations import Guard

    return Guard.decide_many(guard, texts)


def test_unknown_settings_are_refused_and_from_index_passes_its_own(
    toy_guard, tiny_backend
) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="extra"):
        ECONodeFilter(toy_guard, treshold=0.1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="less than 1"):
        ECONodeFilter(toy_guard, threshold=1.0)
    llm = ECOHuggingFaceLLM(ECO(tiny_backend, toy_guard), max_new_tokens=2, mode="shadow")
    index = VectorStoreIndex.from_documents([Document(text=BREAD)], embed_model=_KeywordEmbedding())
    engine = ECOQueryEngine.from_index(index, llm=llm, threshold=0.25)
    (node_filter,) = [
        p
        for p in engine.query_engine._node_postprocessors  # type: ignore[attr-defined]
        if isinstance(p, ECONodeFilter)
    ]
    assert (node_filter.mode, node_filter.threshold, node_filter.engine) == (
        "shadow",
        0.25,
        llm.engine,
    )

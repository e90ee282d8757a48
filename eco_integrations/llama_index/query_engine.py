"""An ECO wrapper around any LlamaIndex query engine: one decision per query, on the question."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Generator, Iterator
from typing import Any, Literal

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.response.schema import (
    RESPONSE_TYPE,
    AsyncStreamingResponse,
    PydanticResponse,
    Response,
    StreamingResponse,
)
from llama_index.core.callbacks import CallbackManager
from llama_index.core.prompts.mixin import PromptDictType, PromptMixinType
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from eco_integrations.config import Decision, Mode
from eco_integrations.engine import ECO, check_mode
from eco_integrations.exceptions import InvalidInputError
from eco_integrations.guard import check_threshold
from eco_integrations.llama_index._context import QueryScope, asteps_in_scope, decision_scope
from eco_integrations.llama_index.events import emit_decision
from eco_integrations.llama_index.llms import ECOHuggingFaceLLM
from eco_integrations.llama_index.postprocessors import ECONodeFilter, escalate_for_marked

_END = object()


def question_text(query: object) -> str:
    """The user's question from a string or ``QueryBundle``, or a clear error.

    An empty question and a bundle without text (an image-only or embedding-only query) are
    refused: the guard has nothing to classify, and answering without a decision would let a
    forget question through unchecked.
    """
    if isinstance(query, QueryBundle):
        text = query.query_str
        if not isinstance(text, str) or not text.strip():
            msg = (
                "The query bundle has no text (query_str is empty), so ECO cannot classify it. "
                "Put the user's question in QueryBundle(query_str=...)."
            )
            raise InvalidInputError(msg)
        return text
    if isinstance(query, str):
        if not query.strip():
            msg = "The query is empty; pass the user's question as a non-empty string."
            raise InvalidInputError(msg)
        return query
    msg = f"A query is a string or a QueryBundle, got {type(query).__name__}."
    raise InvalidInputError(msg)


class ECOQueryEngine(BaseQueryEngine):
    """Wrap any query engine so the user's question is classified once per query.

    >>> from eco_integrations.llama_index import ECOHuggingFaceLLM, ECOQueryEngine
    >>> llm = ECOHuggingFaceLLM.from_pretrained(guard="guards/harry-potter")         # doctest: +SKIP
    >>> engine = ECOQueryEngine(index.as_query_engine(llm=llm), llm)                  # doctest: +SKIP
    >>> engine = ECOQueryEngine.from_index(index, llm=llm)    # adds an ECONodeFilter  # doctest: +SKIP
    >>> response = engine.query("Who is Harry Potter?")                               # doctest: +SKIP

    With ``attach_decision=True`` the decision is also in ``response.metadata["eco_decision"]``
    (off by default, as on the LLM: it names the protected target to whoever sees the metadata).

    The decision is made on ``QueryBundle.query_str`` (never on the context-stuffed prompt),
    dispatched as an :class:`ECODecisionEvent` under the query span, and carried through every
    LLM call of the query by a ContextVar: refine and tree synthesizers call the LLM several
    times and all of them reuse it. Sync, async and streaming queries decide the same way; a
    streaming response keeps the decision while its tokens are consumed.

    When an :class:`ECONodeFilter` drops every retrieved node, LlamaIndex would answer "Empty
    Response" without calling the model, which tells the user that something was removed. With
    ``answer_without_context`` (the default) the model answers the question from an empty
    context instead, as a model that never learned the topic would; ``source_nodes`` stays
    empty. It needs an engine with ``synthesize`` (``index.as_query_engine()`` has it); others
    keep their own answer.

    The wrapped engine must answer with an :class:`ECOHuggingFaceLLM`; one whose response
    synthesizer holds another LLM is refused, since it would ignore the decision.
    """

    def __init__(
        self,
        query_engine: BaseQueryEngine,
        eco: ECO | ECOHuggingFaceLLM,
        *,
        mode: Mode | None = None,
        threshold: float | None = None,
        attach_decision: bool = False,
        answer_without_context: bool = True,
        callback_manager: CallbackManager | None = None,
    ) -> None:
        if not isinstance(query_engine, BaseQueryEngine):
            msg = f"ECOQueryEngine wraps a LlamaIndex query engine, got {type(query_engine).__name__}; pass index.as_query_engine(...)."
            raise InvalidInputError(msg)
        mode = check_mode(mode) if mode is not None else None
        threshold = check_threshold(threshold)
        # Given the LLM, the question is decided as it decides one (with its system prompt).
        self._llm = eco if isinstance(eco, ECOHuggingFaceLLM) else None
        if isinstance(eco, ECOHuggingFaceLLM):
            mode = mode if mode is not None else eco.mode
            threshold = threshold if threshold is not None else eco.threshold
            eco = eco.engine
        if not isinstance(eco, ECO):
            msg = f"ECOQueryEngine needs an ECO engine or an ECOHuggingFaceLLM to decide with, got {type(eco).__name__}."
            raise InvalidInputError(msg)
        # The decision only changes an answer an ECO LLM writes: any other LLM would answer a
        # flagged question in full while the response's metadata says it was corrupted.
        answering = getattr(getattr(query_engine, "_response_synthesizer", None), "_llm", None)
        if answering is not None and not isinstance(answering, ECOHuggingFaceLLM):
            msg = (
                f"The wrapped query engine answers with {type(answering).__name__}, which ignores "
                "ECO's decision; build it with index.as_query_engine(llm=ECOHuggingFaceLLM(...)), "
                "or use ECOQueryEngine.from_index(index, llm=...)."
            )
            raise InvalidInputError(msg)
        self._inner = query_engine
        self._eco = eco
        self._mode = mode
        self._threshold = threshold
        self._attach = attach_decision
        self._answer_without_context = answer_without_context
        super().__init__(callback_manager=callback_manager or query_engine.callback_manager)

    @classmethod
    def from_index(
        cls,
        index: Any,
        *,
        llm: ECOHuggingFaceLLM,
        node_filter: Literal["drop", "mark"] | None = "drop",
        mode: Mode | None = None,
        threshold: float | None = None,
        answer_without_context: bool = True,
        attach_decision: bool = False,
        **kwargs: Any,
    ) -> ECOQueryEngine:
        """``index.as_query_engine(llm=llm, ...)`` with an :class:`ECONodeFilter` on the retrieved nodes, wrapped.

        ``kwargs`` go to ``as_query_engine`` (``similarity_top_k``, ``response_mode``, ``streaming``, ...).
        """
        if not isinstance(llm, ECOHuggingFaceLLM):
            msg = f"from_index needs llm=ECOHuggingFaceLLM(...) (it answers the query), got {type(llm).__name__}."
            raise InvalidInputError(msg)
        postprocessors = list(kwargs.pop("node_postprocessors", None) or [])
        if node_filter is not None and llm.engine.guard is not None:
            # The nodes are decided as the question is: this engine's mode and threshold.
            postprocessors.append(
                ECONodeFilter(
                    engine=llm.engine,
                    action=node_filter,
                    mode=mode if mode is not None else llm.mode,
                    threshold=threshold if threshold is not None else llm.threshold,
                )
            )
        inner = index.as_query_engine(llm=llm, node_postprocessors=postprocessors, **kwargs)
        return cls(
            inner,
            llm,
            mode=mode,
            threshold=threshold,
            answer_without_context=answer_without_context,
            attach_decision=attach_decision,
        )

    @property
    def query_engine(self) -> BaseQueryEngine:
        """The wrapped engine."""
        return self._inner

    # -- the decision -----------------------------------------------------------------------------
    def decide(self, query: str | QueryBundle) -> Decision:
        """Classify the question of ``query`` (no event, no generation)."""
        question = question_text(query)
        if self._llm is not None:
            return self._llm._decide_question(question, mode=self._mode, threshold=self._threshold)
        return self._eco.decide_texts([question], mode=self._mode, threshold=self._threshold)[0]

    def _open_scope(self, query: QueryBundle) -> QueryScope:
        decision = self.decide(query)
        emit_decision(decision, scope="query")
        return QueryScope(decision)

    def _finish(
        self, response: RESPONSE_TYPE, scope: QueryScope, context: contextvars.Context
    ) -> RESPONSE_TYPE:
        if isinstance(response, StreamingResponse) and response.response_gen is not None:
            response.response_gen = _scoped_gen(response.response_gen, context)
        elif isinstance(response, AsyncStreamingResponse) and response.response_gen is not None:
            response.response_gen = asteps_in_scope(response.response_gen, scope)
        if self._attach and isinstance(
            response, (Response, StreamingResponse, AsyncStreamingResponse, PydanticResponse)
        ):
            # Asked for: the decision holds no text (only a hash), but it names the target.
            response.metadata = {
                **(response.metadata or {}),
                "eco_decision": scope.decision.event_payload(),
            }
        return response

    def _context_was_dropped(self, response: RESPONSE_TYPE, scope: QueryScope) -> bool:
        return (
            self._answer_without_context
            and scope.dropped_every_node
            and not getattr(response, "source_nodes", None)
        )

    def _without_context(self, response: RESPONSE_TYPE, empty: NodeWithScore) -> RESPONSE_TYPE:
        response.source_nodes = []
        if isinstance(response.metadata, dict):  # the synthesizer lists the empty node there
            response.metadata.pop(empty.node.node_id, None)
        return response

    # -- BaseQueryEngine --------------------------------------------------------------------------
    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        with decision_scope(self._open_scope(query_bundle)) as scope:
            response = self._inner.query(query_bundle)
            if self._context_was_dropped(response, scope):
                with contextlib.suppress(NotImplementedError):
                    empty = _empty_context()
                    response = self._without_context(
                        self._inner.synthesize(query_bundle, [empty]), empty
                    )
            # Snapshot the context while the scope is set: a streaming response runs its
            # remaining LLM calls lazily, after this method returns.
            context = contextvars.copy_context()
        return self._finish(response, scope, context)

    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        with decision_scope(self._open_scope(query_bundle)) as scope:
            response = await self._inner.aquery(query_bundle)
            if self._context_was_dropped(response, scope):
                with contextlib.suppress(NotImplementedError):
                    empty = _empty_context()
                    response = self._without_context(
                        await self._inner.asynthesize(query_bundle, [empty]), empty
                    )
            context = contextvars.copy_context()
        return self._finish(response, scope, context)

    def retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        question_text(query_bundle)
        return self._inner.retrieve(query_bundle)

    async def aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        """The wrapped engine's ``aretrieve`` (``RetrieverQueryEngine`` has one)."""
        question_text(query_bundle)
        inner = getattr(self._inner, "aretrieve", None)
        if inner is None:
            msg = f"The wrapped {type(self._inner).__name__} has no aretrieve; call retrieve()."
            raise NotImplementedError(msg)
        nodes: list[NodeWithScore] = await inner(query_bundle)
        return nodes

    def synthesize(
        self,
        query_bundle: QueryBundle,
        nodes: list[NodeWithScore],
        additional_source_nodes: Any = None,
    ) -> RESPONSE_TYPE:
        with decision_scope(self._open_scope(query_bundle)) as scope:
            escalate_for_marked(nodes)  # nodes retrieve() marked, outside this scope
            response = self._inner.synthesize(query_bundle, nodes, additional_source_nodes)
            context = contextvars.copy_context()
        return self._finish(response, scope, context)

    async def asynthesize(
        self,
        query_bundle: QueryBundle,
        nodes: list[NodeWithScore],
        additional_source_nodes: Any = None,
    ) -> RESPONSE_TYPE:
        with decision_scope(self._open_scope(query_bundle)) as scope:
            escalate_for_marked(nodes)
            response = await self._inner.asynthesize(query_bundle, nodes, additional_source_nodes)
            context = contextvars.copy_context()
        return self._finish(response, scope, context)

    # -- PromptMixin ------------------------------------------------------------------------------
    def _get_prompts(self) -> PromptDictType:
        return {}

    def _update_prompts(self, prompts: PromptDictType) -> None:
        """The wrapper has no prompts of its own; the wrapped engine's are reached as sub-modules."""

    def _get_prompt_modules(self) -> PromptMixinType:
        return {"query_engine": self._inner}


def _empty_context() -> NodeWithScore:
    # One node without text: the synthesizer then calls the model with its own prompt template
    # and an empty context (no nodes at all would short-circuit to "Empty Response").
    return NodeWithScore(node=TextNode(text=""), score=None)


def _scoped_gen(gen: Iterator[str], context: contextvars.Context) -> Generator[str, None, None]:
    """Advance ``gen`` inside ``context``, where the query scope is set."""
    while True:
        token = context.run(next, gen, _END)
        if token is _END:
            return
        yield token  # type: ignore[misc]

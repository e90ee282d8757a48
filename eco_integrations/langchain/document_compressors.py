"""``ECODocumentCompressor``: retrieved documents about a forget target are dropped or redacted.

A ``langchain_core`` ``BaseDocumentCompressor``, so it fits LangChain's retrieval conventions:
``ContextualCompressionRetriever(base_compressor=..., base_retriever=...)``, a
``DocumentCompressorPipeline``, or a call of its own after any retriever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, Field

from eco_integrations._passages import TextVerdict, decide_retrieved
from eco_integrations.config import Decision, Mode, Threshold
from eco_integrations.engine import ECO
from eco_integrations.exceptions import InvalidInputError
from eco_integrations.langchain._decision import (
    DOCUMENTS_EVENT_NAME,
    ChatModelField,
    EngineField,
    aemit_event,
    chat_model_engine,
    deciding_engine,
    emit_event,
)
from eco_integrations.langchain.chat_models import ChatECOHuggingFace

Outcome = Literal["kept", "dropped", "redacted"]


@dataclass(frozen=True)
class _Compressed:
    documents: list[Document]
    payload: dict[str, Any]


class ECODocumentCompressor(BaseDocumentCompressor):
    """Remove what retrieved documents know about a forget target, before the model reads them.

    Example:
        .. code-block:: python

            from langchain_classic.retrievers import ContextualCompressionRetriever

            compressor = ECODocumentCompressor.from_chat_model(chat, action="redact")
            retriever = ContextualCompressionRetriever(
                base_compressor=compressor, base_retriever=store.as_retriever()
            )

    ECO corrupts a flagged question; the context a retriever adds to the prompt is not corrupted.
    Asked "Who is the headmaster of Hogwarts?", a RAG chain may retrieve "Albus Dumbledore is the
    headmaster of Hogwarts", and the model reads the forgotten fact from its context window.

    * ``action="drop"`` (default) removes flagged documents.
    * ``action="redact"`` removes the flagged sentences of a flagged document and keeps the rest
      (a new ``Document`` with the same ``id`` and ``metadata``). Nothing marks the cut: a visible
      marker would tell the reader which topic is protected. A document whose rest is still
      flagged as a whole, or that has no benign rest, is dropped.
    * ``filter_when="always"`` (default) filters documents whatever the question: a benign-looking
      question ("Which schools teach magic?") can retrieve a forget-target passage, and the
      model would answer from it uncorrupted, so the question's verdict alone cannot be trusted
      to keep the context clean. ``"query_flagged"`` filters only when the question itself is
      flagged, saving the scoring of benign traffic's documents at that risk.
    * ``mode="shadow"`` scores and reports but never removes anything; ``"off"`` passes the
      documents through unscored. ``None`` keeps the engine's mode.

    Decisions are the engine's (:meth:`ECO.decide_texts`, with ``threshold`` and ``mode``): a
    document is flagged when its text, or any one of its sentences, is. Only ``page_content`` is
    scored (what LangChain puts in the prompt); blank documents are kept and counted unscored.
    Kept documents are returned as they came, in order, metadata untouched. Each call emits one
    ``eco_documents`` custom event on the retriever's run: counts, and per flagged document its
    index, ``id``, outcome and decision (a hash, never the text).
    """

    # validate_assignment: a bad value is refused where it is set, not at the next call.
    model_config = ConfigDict(
        arbitrary_types_allowed=True, extra="forbid", validate_assignment=True
    )

    engine: EngineField = Field(exclude=True)
    """The engine whose guard and policy decide; ``from_chat_model`` takes a chat model's."""

    chat_model: ChatModelField | None = Field(default=None, exclude=True)
    """Set by ``from_chat_model``: decisions follow this chat model's engine, threshold, mode and
    window as they are at each call (``chat.mode = "shadow"`` reaches this too)."""

    action: Literal["drop", "redact"] = "drop"
    """drop flagged documents, or redact their flagged sentences."""

    filter_when: Literal["always", "query_flagged"] = "always"
    """Filter every call's documents, or only those retrieved for a flagged question."""

    threshold: Threshold | None = None
    """Override the guard's threshold (flagged means score > threshold)."""

    mode: Mode | None = None
    """``enforce`` | ``shadow`` | ``off``; None keeps the engine's mode."""

    @classmethod
    def from_chat_model(cls, chat: ChatECOHuggingFace, **kwargs: Any) -> ECODocumentCompressor:
        """A compressor deciding as ``chat`` does (its engine, threshold and mode), now and
        after a change to them."""
        return cls(engine=chat_model_engine(chat, cls), chat_model=chat, **kwargs)

    @property
    def deciding_engine(self) -> ECO:
        """The engine decisions are made with now: the chat model's, if built from one."""
        return deciding_engine(self.engine, self.chat_model)

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        compressed = self._compress(documents, query)
        emit_event(DOCUMENTS_EVENT_NAME, compressed.payload, callbacks)
        return compressed.documents

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        # The guard's encoder runs in a worker thread: the event loop keeps serving meanwhile.
        compressed = await asyncio.to_thread(self._compress, documents, query)
        await aemit_event(DOCUMENTS_EVENT_NAME, compressed.payload, callbacks)
        return compressed.documents

    def _compress(self, documents: Sequence[Document], query: str) -> _Compressed:
        docs = _check_documents(documents, query)
        # One engine for the whole call: a chat model's settings changed meanwhile apply to the
        # next call, not to half of this one.
        engine = self.deciding_engine

        def decide(texts: list[str]) -> list[Decision]:
            return engine.decide_texts(texts, mode=self.mode, threshold=self.threshold)

        mode = self.mode or engine.mode
        query_decision: Decision | None = None
        if self.filter_when == "query_flagged" and mode != "off" and query.strip():
            query_decision = decide([query])[0]
        filtering = mode != "off" and (
            self.filter_when == "always" or (query_decision is not None and query_decision.flagged)
        )
        verdicts: list[TextVerdict | None] = [None] * len(docs)
        if filtering:
            verdicts = decide_retrieved([d.page_content for d in docs], decide)
        outcomes: list[Outcome] = ["kept"] * len(docs)
        kept: list[Document | None] = list(docs)
        if mode == "enforce":
            for i, verdict in enumerate(verdicts):
                if verdict is not None and verdict.decision.flagged:
                    kept[i] = self._enforce(docs[i], verdict)
                    outcomes[i] = "dropped" if kept[i] is None else "redacted"
            self._recheck(kept, outcomes, decide)
        return _Compressed(
            [d for d in kept if d is not None],
            self._payload(engine, docs, verdicts, outcomes, mode, query_decision),
        )

    def _enforce(self, document: Document, verdict: TextVerdict) -> Document | None:
        if self.action == "drop" or not verdict.flagged_spans:
            return None
        rest = _without(document.page_content, verdict)
        if not rest:
            return None
        return document.model_copy(update={"page_content": rest})

    @staticmethod
    def _recheck(
        kept: list[Document | None],
        outcomes: list[Outcome],
        decide: Callable[[list[str]], list[Decision]],
    ) -> None:
        """Drop a redacted document whose rest is still flagged: the facts may sit across the
        sentences left, each benign alone (the guard also reads a long text a few sentences at a
        time)."""
        redacted = {
            i: d.page_content
            for i, d in enumerate(kept)
            if d is not None and outcomes[i] == "redacted"
        }
        if not redacted:
            return
        for i, decision in zip(redacted, decide(list(redacted.values())), strict=True):
            if decision.flagged:
                kept[i] = None
                outcomes[i] = "dropped"

    def _payload(
        self,
        engine: ECO,
        docs: list[Document],
        verdicts: list[TextVerdict | None],
        outcomes: list[Outcome],
        mode: Mode,
        query_decision: Decision | None,
    ) -> dict[str, Any]:
        flagged = [
            {
                "index": i,
                "id": docs[i].id,
                "outcome": outcomes[i],
                "flagged_sentences": len(v.flagged_spans),
                "decision": v.decision.event_payload(),
            }
            for i, v in enumerate(verdicts)
            if v is not None and v.decision.flagged
        ]
        scores = [v.decision.score for v in verdicts if v is not None]
        guard = engine.guard
        return {
            "action": self.action,
            "filter_when": self.filter_when,
            "mode": mode,
            "n_documents": len(docs),
            "n_scored": sum(v is not None for v in verdicts),
            "n_flagged": len(flagged),
            "n_dropped": outcomes.count("dropped"),
            "n_redacted": outcomes.count("redacted"),
            "max_score": max((s for s in scores if s is not None), default=None),
            "flagged": flagged,
            "query": query_decision.event_payload() if query_decision is not None else None,
            "guard_id": guard.guard_id if guard is not None else None,
            "guard_version": guard.version if guard is not None else None,
            "policy_version": engine.policy_version,
        }


def _check_documents(documents: object, query: object) -> list[Document]:
    if isinstance(documents, (str, bytes, Document)) or not isinstance(documents, Sequence):
        msg = (
            f"ECODocumentCompressor takes a list of Documents, got {type(documents).__name__}; "
            "wrap a single document as [document]."
        )
        raise InvalidInputError(msg)
    for i, doc in enumerate(documents):
        if not isinstance(doc, Document):
            msg = (
                f"documents[{i}] is {type(doc).__name__}, not a langchain_core Document; "
                "wrap texts as Document(page_content=text)."
            )
            raise InvalidInputError(msg)
    if not isinstance(query, str):
        msg = f"query must be the question as a string, got {type(query).__name__}."
        raise InvalidInputError(msg)
    return list(documents)


def _without(text: str, verdict: TextVerdict) -> str:
    """``text`` without its flagged sentences; each goes with the space that follows it."""
    starts = [a for a, _, _ in verdict.sentences]
    ends = [*starts[1:], len(text)]
    cuts = [(a, end) for (a, _, d), end in zip(verdict.sentences, ends, strict=True) if d.flagged]
    pieces, position = [], 0
    for a, end in cuts:
        pieces.append(text[position:a])
        position = end
    pieces.append(text[position:])
    return "".join(pieces).strip()

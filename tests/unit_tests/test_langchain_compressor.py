"""ECODocumentCompressor: retrieved documents about a forget target are dropped or redacted."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.callbacks import (
    BaseCallbackHandler,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda
from pydantic import ValidationError

from eco_integrations import ECO, InvalidInputError
from eco_integrations.langchain import (
    DOCUMENTS_EVENT_NAME,
    ChatECOHuggingFace,
    ECODocumentCompressor,
)

HP_FACT = "Harry Potter is a wizard at Hogwarts."
HP_FRIENDS = "Hermione and Ron are friends of Harry Potter."
BREAD = "Bread is baked from flour, water, yeast and salt."
PARIS = "Paris is the capital of France."
ROME = "Rome is the capital of Italy."
FORGET_QUERY = "Who is Harry Potter?"
BENIGN_QUERY = "What is the capital of France?"


def _docs() -> list[Document]:
    return [
        Document(page_content=BREAD, id="bread", metadata={"source": "a.txt", "page": 1}),
        Document(page_content=HP_FACT, id="hp", metadata={"source": "b.txt"}),
        Document(page_content=PARIS, id="paris", metadata={"source": "c.txt"}),
        Document(page_content=f"{ROME} {HP_FRIENDS}\n{BREAD}", id="mixed", metadata={"k": 2}),
        Document(page_content="   ", id="blank"),
    ]


class Events(BaseCallbackHandler):
    def __init__(self) -> None:
        self.retriever_runs: list[UUID] = []
        self.events: list[tuple[str, dict[str, Any], UUID]] = []

    def on_retriever_start(self, serialized: Any, query: str, *, run_id: UUID, **kw: Any) -> None:
        self.retriever_runs.append(run_id)

    def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **kw: Any) -> None:
        self.events.append((name, data, run_id))

    def payloads(self) -> list[dict[str, Any]]:
        return [data for name, data, _ in self.events if name == DOCUMENTS_EVENT_NAME]


class ListRetriever(BaseRetriever):
    documents: list[Document]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return list(self.documents)


def _compression_retriever(
    compressor: ECODocumentCompressor, docs: list[Document]
) -> ContextualCompressionRetriever:
    return ContextualCompressionRetriever(
        base_compressor=compressor, base_retriever=ListRetriever(documents=docs)
    )


@pytest.fixture
def eco(tiny_backend, toy_guard) -> ECO:
    return ECO(tiny_backend, toy_guard)


def _compress(compressor: ECODocumentCompressor, docs: Sequence[Document], query: str) -> Any:
    """Compressed documents and the call's one event payload (through a retriever run)."""
    events = Events()
    retriever = _compression_retriever(compressor, list(docs))
    out = retriever.invoke(query, config={"callbacks": [events]})
    (payload,) = events.payloads()
    return out, payload


def test_drop_removes_forget_documents_and_keeps_the_rest_as_they_came(eco: ECO) -> None:
    docs = _docs()
    originals = [d.model_copy(deep=True) for d in docs]
    out, payload = _compress(ECODocumentCompressor(engine=eco), docs, BENIGN_QUERY)
    # Filtered whatever the question: a benign question retrieved a forget-target document.
    assert [d.id for d in out] == ["bread", "paris", "blank"]
    assert [d.model_dump() for d in out] == [originals[i].model_dump() for i in (0, 2, 4)]
    assert docs[1].page_content == HP_FACT  # the input list is not mutated
    assert (payload["n_documents"], payload["n_scored"], payload["n_flagged"]) == (5, 4, 2)
    assert (payload["n_dropped"], payload["n_redacted"]) == (2, 0)
    assert [(f["index"], f["id"], f["outcome"]) for f in payload["flagged"]] == [
        (1, "hp", "dropped"),
        (3, "mixed", "dropped"),
    ]
    assert payload["flagged"][1]["flagged_sentences"] == 1
    assert all(f["decision"]["flagged"] for f in payload["flagged"])


def test_redact_removes_the_forget_sentences_and_keeps_the_benign_rest(eco: ECO) -> None:
    docs = _docs()
    out, payload = _compress(ECODocumentCompressor(engine=eco, action="redact"), docs, FORGET_QUERY)
    # The single-sentence forget document has no benign rest: dropped.
    assert [d.id for d in out] == ["bread", "paris", "mixed", "blank"]
    mixed = out[2]
    assert mixed.page_content == f"{ROME} {BREAD}"
    assert "Harry" not in mixed.page_content
    assert mixed.metadata == {"k": 2}
    assert docs[3].page_content == f"{ROME} {HP_FRIENDS}\n{BREAD}"  # a copy was redacted
    assert out[0] is docs[0] and out[1] is docs[2]
    assert (payload["n_dropped"], payload["n_redacted"]) == (1, 1)
    assert [(f["id"], f["outcome"]) for f in payload["flagged"]] == [
        ("hp", "dropped"),
        ("mixed", "redacted"),
    ]


def test_redact_drops_a_document_with_nothing_benign_left(eco: ECO) -> None:
    only_forget = Document(page_content=f"{HP_FACT}\n{HP_FRIENDS}", id="all-hp")
    compressor = ECODocumentCompressor(engine=eco, action="redact")
    assert compressor.compress_documents([only_forget, Document(page_content=BREAD)], "q") == [
        Document(page_content=BREAD)
    ]


def test_redact_drops_a_document_whose_rest_is_still_flagged(
    eco: ECO, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Facts spread over sentences that are benign one by one: the rest is decided again.
    decide = eco.decide_texts

    def spread(texts: Sequence[str], **kw: Any) -> list[Any]:
        return [
            d.model_copy(update={"flagged": True}) if ROME in t and BREAD in t else d
            for t, d in zip(texts, decide(texts, **kw), strict=True)
        ]

    monkeypatch.setattr(eco, "decide_texts", spread)
    out, payload = _compress(ECODocumentCompressor(engine=eco, action="redact"), _docs(), "q")
    assert [d.id for d in out] == ["bread", "paris", "blank"]
    assert payload["flagged"][1]["outcome"] == "dropped"


def test_shadow_scores_and_reports_but_keeps_everything(eco: ECO) -> None:
    docs = _docs()
    out, payload = _compress(ECODocumentCompressor(engine=eco, mode="shadow"), docs, FORGET_QUERY)
    assert all(a is b for a, b in zip(out, docs, strict=True))
    assert (payload["mode"], payload["n_flagged"], payload["n_dropped"]) == ("shadow", 2, 0)
    assert [f["outcome"] for f in payload["flagged"]] == ["kept", "kept"]


def test_off_passes_documents_through_unscored(eco: ECO, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(eco, "decide_texts", lambda *a, **kw: calls.append(a))
    docs = _docs()
    out, payload = _compress(ECODocumentCompressor(engine=eco, mode="off"), docs, FORGET_QUERY)
    assert out == docs and calls == []
    assert (payload["mode"], payload["n_scored"], payload["n_flagged"]) == ("off", 0, 0)


def test_an_engine_in_shadow_mode_keeps_its_mode(tiny_backend, toy_guard) -> None:
    compressor = ECODocumentCompressor(engine=ECO(tiny_backend, toy_guard, mode="shadow"))
    assert len(compressor.compress_documents(_docs(), FORGET_QUERY)) == 5


def test_threshold_override(eco: ECO) -> None:
    docs = _docs()
    strict = ECODocumentCompressor(engine=eco, threshold=0.6)
    assert strict.compress_documents(docs, FORGET_QUERY) == docs
    lenient = ECODocumentCompressor(engine=eco, threshold=0.48)
    assert [d.id for d in lenient.compress_documents(docs, FORGET_QUERY)] == ["paris", "blank"]


def test_from_chat_model_decides_as_the_chat_model(eco: ECO) -> None:
    chat = ChatECOHuggingFace(engine=eco, threshold=0.6)
    compressor = ECODocumentCompressor.from_chat_model(chat, action="redact")
    assert compressor.action == "redact"
    assert compressor.compress_documents(_docs(), FORGET_QUERY) == _docs()
    plain = ECODocumentCompressor.from_chat_model(ChatECOHuggingFace(engine=eco))
    assert len(plain.compress_documents(_docs(), FORGET_QUERY)) == 3
    # It follows the chat model's settings as they are at each call, not as they were.
    chat.threshold = None
    assert len(compressor.compress_documents(_docs(), FORGET_QUERY)) < len(_docs())
    chat.mode = "shadow"
    assert compressor.compress_documents(_docs(), FORGET_QUERY) == _docs()
    with pytest.raises(ValidationError, match="chat_model takes a ChatECOHuggingFace"):
        ECODocumentCompressor(engine=eco, chat_model=eco)


def test_query_flagged_policy_filters_only_for_a_flagged_question(eco: ECO) -> None:
    compressor = ECODocumentCompressor(engine=eco, filter_when="query_flagged")
    benign, payload = _compress(compressor, _docs(), BENIGN_QUERY)
    assert [d.id for d in benign] == ["bread", "hp", "paris", "mixed", "blank"]
    assert payload["n_scored"] == 0 and payload["query"]["flagged"] is False
    flagged, payload = _compress(compressor, _docs(), FORGET_QUERY)
    assert [d.id for d in flagged] == ["bread", "paris", "blank"]
    assert payload["query"]["flagged"] is True and payload["n_dropped"] == 2


def test_the_event_hangs_on_the_retriever_run_and_carries_no_text(eco: ECO) -> None:
    events = Events()
    retriever = _compression_retriever(ECODocumentCompressor(engine=eco), _docs())
    retriever.invoke(FORGET_QUERY, config={"callbacks": [events]})
    ((name, payload, run_id),) = events.events
    assert name == DOCUMENTS_EVENT_NAME == "eco_documents"
    assert run_id == events.retriever_runs[0]
    dumped = json.dumps(payload)
    for fragment in ("Hogwarts", "wizard", "Hermione", "flour", "Paris", "Rome", "Who is"):
        assert fragment not in dumped
    assert payload["guard_id"] == eco.guard.guard_id  # type: ignore[union-attr]
    assert payload["policy_version"] == eco.policy_version


def test_works_in_a_chain_after_the_retriever(eco: ECO) -> None:
    events = Events()
    retriever = _compression_retriever(ECODocumentCompressor(engine=eco), _docs())
    chain = retriever | RunnableLambda(lambda docs: "\n".join(d.page_content for d in docs))
    context = chain.invoke(BENIGN_QUERY, config={"callbacks": [events]})
    assert context == f"{BREAD}\n{PARIS}\n   "
    assert [p["n_dropped"] for p in events.payloads()] == [2]


@pytest.mark.parametrize("action", ["drop", "redact"])
async def test_async_equals_sync_and_runs_in_a_worker_thread(
    eco: ECO, monkeypatch: pytest.MonkeyPatch, action: str
) -> None:
    compressor = ECODocumentCompressor(engine=eco, action=action)  # type: ignore[arg-type]
    sync = compressor.compress_documents(_docs(), FORGET_QUERY)
    threads: list[int] = []
    decide = eco.decide_texts

    def recording(texts: Sequence[str], **kw: Any) -> list[Any]:
        threads.append(threading.get_ident())
        return decide(texts, **kw)

    monkeypatch.setattr(eco, "decide_texts", recording)
    assert await compressor.acompress_documents(_docs(), FORGET_QUERY) == sync
    assert threads and threading.get_ident() not in threads


async def test_async_retriever_emits_the_event_in_astream_events(eco: ECO) -> None:
    retriever = _compression_retriever(ECODocumentCompressor(engine=eco), _docs())
    events = [
        e
        async for e in retriever.astream_events(FORGET_QUERY, version="v2")
        if e["event"] in ("on_custom_event", "on_retriever_end")
    ]
    custom = [e for e in events if e["event"] == "on_custom_event"]
    assert [e["name"] for e in custom] == [DOCUMENTS_EVENT_NAME]
    assert custom[0]["data"]["n_dropped"] == 2
    (end,) = [e for e in events if e["event"] == "on_retriever_end" and not e["parent_ids"]]
    assert [d.id for d in end["data"]["output"]] == ["bread", "paris", "blank"]


@pytest.mark.parametrize(
    ("documents", "query", "match"),
    [
        ([BREAD], "q", r"documents\[0\] is str.*Document\(page_content=text\)"),
        (BREAD, "q", r"list of Documents, got str"),
        (Document(page_content=BREAD), "q", r"wrap a single document as \[document\]"),
        ([Document(page_content=BREAD)], None, r"query must be the question as a string"),
    ],
)
def test_bad_input_is_named(eco: ECO, documents: Any, query: Any, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        ECODocumentCompressor(engine=eco).compress_documents(documents, query)


def test_unknown_option_is_rejected(eco: ECO) -> None:
    with pytest.raises(ValueError, match="action"):
        ECODocumentCompressor(engine=eco, action="mark")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="extra"):
        ECODocumentCompressor(engine=eco, split="yes")  # type: ignore[call-arg]


def test_an_empty_list_is_returned_empty(eco: ECO) -> None:
    compressor = ECODocumentCompressor(engine=eco)
    assert list(compressor.compress_documents([], FORGET_QUERY)) == []
    # The retriever does not call its compressor when nothing was retrieved: no event either.
    events = Events()
    out = _compression_retriever(compressor, []).invoke(FORGET_QUERY, {"callbacks": [events]})
    assert out == [] and events.payloads() == []


def test_a_document_of_invisible_characters_is_kept_unscored(eco: ECO) -> None:
    invisible = Document(page_content="\u200b\u200b", id="invisible")
    hp = Document(page_content=HP_FACT, id="hp")
    out = ECODocumentCompressor(engine=eco).compress_documents([invisible, hp], FORGET_QUERY)
    assert [d.id for d in out] == ["invisible"]


def test_from_chat_model_names_an_engine_passed_in_its_place(eco: ECO) -> None:
    from eco_integrations import InvalidInputError

    with pytest.raises(
        InvalidInputError, match=r"for an engine use ECODocumentCompressor\(engine="
    ):
        ECODocumentCompressor.from_chat_model(eco)  # type: ignore[arg-type]

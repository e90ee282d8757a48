"""The LlamaIndex skin on the embedded defaults: SmolLM2, MiniLM and the demo Harry Potter guard.

Kept lean (short answers, one or two retrieved nodes): the model decodes ~15 tokens/s on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "llama_index.core",
    reason="Install the extra to run: pip install 'eco-integrations[llamaindex]'",
)

from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.instrumentation.events.llm import LLMChatStartEvent

from eco_integrations import ECO
from eco_integrations.llama_index import (
    ECODecisionEvent,
    ECOEmbedding,
    ECOHuggingFaceLLM,
    ECOQueryEngine,
)

pytestmark = pytest.mark.integration

CORPUS = Path(__file__).resolve().parents[2] / "cookbook" / "rag_corpus.jsonl"
BENIGN = "What is the capital of France?"
FORGET = "Who is Harry Potter?"
# Benign-looking (the guard passes it) but it retrieves the Quidditch passage.
# Words of the retrieved Harry Potter passage (hp-01) that an answer drawing on it would use.
FACT_WORDS = ("wizard", "rowling", "hogwarts", "voldemort", "orphan")
SIDE_DOOR = "What is the broomstick sport played at the castle school called?"


@pytest.fixture(scope="module")
def eco(default_backend, hp_guard) -> ECO:
    return ECO(default_backend, hp_guard)


@pytest.fixture(scope="module")
def index(hp_guard) -> VectorStoreIndex:
    rows = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    docs = [Document(text=r["text"], metadata={"title": r["title"]}, doc_id=r["id"]) for r in rows]
    # The guard's encoder is the embedded MiniLM: one model in memory for retrieval and the guard.
    return VectorStoreIndex.from_documents(docs, embed_model=ECOEmbedding(encoder=hp_guard.encoder))


def _plain(backend: Any, messages: list[dict[str, str]], max_new_tokens: int) -> str:
    """The unmodified model on the same messages: chat template and greedy decoding, no ECO."""
    import torch

    tok, model = backend.tokenizer, backend.model
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            **ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id
        )
    return tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def _messages(event: LLMChatStartEvent) -> list[dict[str, str]]:
    return [{"role": m.role.value, "content": m.content or ""} for m in event.messages]


def test_settings_llm_answers_benign_questions_like_the_plain_model(
    eco: ECO, index: VectorStoreIndex, events: list
) -> None:
    llm = ECOHuggingFaceLLM(eco, max_new_tokens=12)
    previous = Settings._llm
    Settings.llm = llm
    try:
        response = index.as_query_engine(similarity_top_k=1).query(BENIGN)
    finally:
        Settings._llm = previous
    (chat,) = [e for e in events if isinstance(e, LLMChatStartEvent)]
    assert (
        "Paris is the capital" in chat.messages[-1].content
    )  # retrieved context reached the prompt
    assert response.response == _plain(eco.backend, _messages(chat), 12).strip()
    assert "Paris" in response.response


async def test_sync_async_and_streaming_decide_and_answer_alike(
    eco: ECO, index: VectorStoreIndex
) -> None:
    llm = ECOHuggingFaceLLM(eco, max_new_tokens=8)
    results = []
    for streaming in (False, True):
        engine = ECOQueryEngine(
            index.as_query_engine(llm=llm, similarity_top_k=1, streaming=streaming),
            llm,
            attach_decision=True,
        )
        sync = engine.query(FORGET)
        text = "".join(sync.response_gen) if streaming else sync.response
        results.append((text, sync.metadata["eco_decision"]))
        asynchronous = await engine.aquery(FORGET)
        text = (
            "".join([t async for t in asynchronous.response_gen])
            if streaming
            else asynchronous.response
        )
        results.append((text, asynchronous.metadata["eco_decision"]))
    texts = {t.strip() for t, _ in results}
    decisions = {
        json.dumps({k: v for k, v in d.items() if k != "latency_ms"}, sort_keys=True)
        for _, d in results
    }
    assert len(texts) == 1 and len(decisions) == 1
    assert results[0][1]["flagged"] is True and results[0][1]["corrupted"] is True


def test_forget_question_gets_the_unlearned_answer(
    eco: ECO, index: VectorStoreIndex, events: list
) -> None:
    llm = ECOHuggingFaceLLM(eco, max_new_tokens=16)
    engine = ECOQueryEngine.from_index(index, llm=llm, node_filter="mark", similarity_top_k=1)
    response = engine.query(FORGET)
    (decision,) = [e for e in events if isinstance(e, ECODecisionEvent)]
    assert decision.scope == "query" and decision.flagged and decision.corrupted
    assert decision.span_id is not None and decision.span_id.startswith("ECOQueryEngine.")
    (chat,) = [e for e in events if isinstance(e, LLMChatStartEvent)]
    plain = _plain(eco.backend, _messages(chat), 16).lower()
    assert any(
        w in plain for w in FACT_WORDS
    )  # the plain model reads the facts from the retrieved context ...
    assert not any(
        w in response.response.lower() for w in FACT_WORDS
    )  # ... the ECO answer does not


def test_refine_decides_once_with_the_real_model(
    eco: ECO, index: VectorStoreIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []
    decide = eco.decide_texts

    def counted(texts: Any, **kwargs: Any) -> Any:
        calls.append(list(texts))
        return decide(texts, **kwargs)

    monkeypatch.setattr(eco, "decide_texts", counted)
    llm = ECOHuggingFaceLLM(eco, max_new_tokens=6)
    generations: list[Any] = []
    generate = eco.generate
    monkeypatch.setattr(
        eco,
        "generate",
        lambda requests, **kw: generations.append(requests[0].decision) or generate(requests, **kw),
    )
    ECOQueryEngine(
        index.as_query_engine(llm=llm, similarity_top_k=2, response_mode="refine"), llm
    ).query(FORGET)
    assert calls == [[FORGET]]
    assert len(generations) == 2 and all(d.flagged for d in generations)


def test_retrieved_context_cannot_leak_the_forgotten_fact(
    eco: ECO, index: VectorStoreIndex
) -> None:
    assert not eco.decide(SIDE_DOOR).flagged  # the question alone passes the guard
    plain_llm = ECOHuggingFaceLLM(eco, max_new_tokens=16, mode="off")
    leaked = index.as_query_engine(llm=plain_llm, similarity_top_k=1).query(SIDE_DOOR)
    assert "Quidditch" in leaked.response  # without ECO, retrieval hands the model the fact

    llm = ECOHuggingFaceLLM(eco, max_new_tokens=16)
    response = ECOQueryEngine.from_index(index, llm=llm, similarity_top_k=1).query(SIDE_DOOR)
    assert "Quidditch" not in response.response
    assert all(not n.node.ref_doc_id.startswith("hp-") for n in response.source_nodes)

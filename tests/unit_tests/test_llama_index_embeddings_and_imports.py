"""ECOEmbedding over the tiny encoder, the public names, and the missing-extra error."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import numpy as np
import pytest

pytest.importorskip(
    "llama_index.core",
    reason="Install the extra to run: pip install 'eco-integrations[llamaindex]'",
)

from llama_index.core import Document, VectorStoreIndex

import eco_integrations.llama_index as eco_llama_index
from eco_integrations import MissingDependencyError
from eco_integrations.llama_index import ECOEmbedding


def test_public_names() -> None:
    assert eco_llama_index.__all__ == [
        "ECODecisionEvent",
        "ECOEmbedding",
        "ECOHuggingFaceLLM",
        "ECONodeFilter",
        "ECONodeFilterEvent",
        "ECOQueryEngine",
        "active_decision",
        "decision_scope",
    ]
    assert all(hasattr(eco_llama_index, name) for name in eco_llama_index.__all__)


def test_missing_llama_index_names_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def without_llama_index(name: str, *args: object) -> object:
        return None if name.startswith("llama_index") else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_llama_index)
    monkeypatch.delitem(sys.modules, "eco_integrations.llama_index")
    with pytest.raises(
        MissingDependencyError, match=r"pip install 'eco-integrations\[llamaindex\]'"
    ):
        importlib.import_module("eco_integrations.llama_index")


def test_engine_does_not_import_llama_index() -> None:
    import subprocess

    code = "import sys, eco_integrations; eco_integrations.ECO; print(any(m.startswith('llama_index') for m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "False"


def test_embedding_matches_the_encoder(tiny_encoder) -> None:
    embed = ECOEmbedding(encoder=tiny_encoder)
    texts = ["Bread is baked from flour.", "Paris is the capital of France."]
    expected = tiny_encoder.encode(texts)
    np.testing.assert_allclose(
        embed.get_text_embedding_batch(texts), expected, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        embed.get_query_embedding(texts[0]), expected[0], rtol=1e-5, atol=1e-6
    )
    assert embed.model_name == tiny_encoder.name


async def test_async_embedding_matches_sync(tiny_encoder) -> None:
    embed = ECOEmbedding(encoder=tiny_encoder)
    assert await embed.aget_query_embedding("Who wrote the book?") == embed.get_query_embedding(
        "Who wrote the book?"
    )
    assert await embed.aget_text_embedding_batch(["a b", "c"]) == embed.get_text_embedding_batch(
        ["a b", "c"]
    )


def test_embedding_builds_a_vector_index(tiny_encoder) -> None:
    docs = [
        Document(text="Bread is baked from flour, water, yeast and salt."),
        Document(text="Gandalf is a wizard."),
    ]
    index = VectorStoreIndex.from_documents(docs, embed_model=ECOEmbedding(encoder=tiny_encoder))
    (hit,) = index.as_retriever(similarity_top_k=1).retrieve(
        "Bread is baked from flour, water, yeast and salt."
    )
    assert "Bread" in hit.node.get_content()


def test_embedding_rejects_other_encoders() -> None:
    from eco_integrations import InvalidInputError

    with pytest.raises(InvalidInputError, match="SentenceEncoder"):
        ECOEmbedding(encoder="all-MiniLM-L6-v2")  # type: ignore[arg-type]

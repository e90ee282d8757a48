"""The embedded sentence encoder (all-MiniLM-L6-v2 by default) as a LlamaIndex embedding model."""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from pydantic import PrivateAttr

from eco_integrations.encoder import SentenceEncoder
from eco_integrations.exceptions import InvalidInputError


class ECOEmbedding(BaseEmbedding):
    """Embed documents and queries with the package's :class:`~eco_integrations.SentenceEncoder`.

    >>> from llama_index.core import VectorStoreIndex
    >>> embed_model = ECOEmbedding()                      # the embedded all-MiniLM-L6-v2
    >>> index = VectorStoreIndex.from_documents(docs, embed_model=embed_model)   # doctest: +SKIP

    Pass the guard's encoder (``ECOEmbedding(encoder=guard.encoder)``) to load the model once
    for both retrieval and the guard. Vectors are L2-normalised, so the default cosine
    similarity is a dot product.
    """

    _encoder: SentenceEncoder = PrivateAttr()

    def __init__(self, encoder: SentenceEncoder | None = None, **kwargs: Any) -> None:
        encoder = encoder if encoder is not None else SentenceEncoder()
        if not isinstance(encoder, SentenceEncoder):
            msg = f"ECOEmbedding wraps an eco_integrations SentenceEncoder, got {type(encoder).__name__}."
            raise InvalidInputError(msg)
        kwargs.setdefault("model_name", encoder.name)
        super().__init__(**kwargs)
        self._encoder = encoder

    @classmethod
    def class_name(cls) -> str:
        return "ECOEmbedding"

    @property
    def encoder(self) -> SentenceEncoder:
        return self._encoder

    def _embed(self, texts: list[str]) -> list[Embedding]:
        # An empty text still gets a vector (the encoder pools the special tokens), so empty
        # nodes can be indexed; they simply match nothing well.
        return [row.tolist() for row in self._encoder.encode(list(texts))]

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._embed([query])[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._embed([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._embed(texts)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)

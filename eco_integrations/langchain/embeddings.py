"""``ECOEmbeddings``: LangChain ``Embeddings`` over the package's :class:`SentenceEncoder`."""

from __future__ import annotations

import asyncio

from langchain_core.embeddings import Embeddings

from eco_integrations.encoder import SentenceEncoder


class ECOEmbeddings(Embeddings):
    """Embed documents and queries with the same encoder the guard uses (MiniLM by default).

    >>> from langchain_core.vectorstores import InMemoryVectorStore     # doctest: +SKIP
    >>> store = InMemoryVectorStore(ECOEmbeddings())                    # doctest: +SKIP
    >>> store.add_texts(["Paris is the capital of France."])            # doctest: +SKIP
    """

    def __init__(self, encoder: SentenceEncoder | None = None) -> None:
        self.encoder = encoder if encoder is not None else SentenceEncoder()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        vectors: list[list[float]] = self.encoder.encode(list(texts)).tolist()
        return vectors

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.to_thread(self.embed_query, text)

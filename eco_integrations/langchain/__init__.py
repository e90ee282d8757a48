"""LangChain skin over the ECO engine: a chat model, a routing Runnable, agent middleware, and a
document compressor for retrieved context.

>>> from eco_integrations.langchain import ChatECOHuggingFace           # doctest: +SKIP
>>> chat = ChatECOHuggingFace.from_pretrained(guard="guards/harry-potter")  # doctest: +SKIP

Needs the ``langchain`` extra: ``pip install 'eco-integrations[langchain]'``.
"""

from __future__ import annotations

import importlib.util

from eco_integrations.exceptions import MissingDependencyError

if importlib.util.find_spec("langchain_core") is None:
    msg = (
        "eco_integrations.langchain needs langchain-core. "
        "Install it with: pip install 'eco-integrations[langchain]'"
    )
    raise MissingDependencyError(msg)

from eco_integrations.langchain._decision import DECISION_KWARG, DOCUMENTS_EVENT_NAME, EVENT_NAME
from eco_integrations.langchain.chat_models import ChatECOHuggingFace
from eco_integrations.langchain.document_compressors import ECODocumentCompressor
from eco_integrations.langchain.embeddings import ECOEmbeddings
from eco_integrations.langchain.runnables import ECORouter

__all__ = [
    "DECISION_KWARG",
    "DOCUMENTS_EVENT_NAME",
    "EVENT_NAME",
    "ChatECOHuggingFace",
    "ECODocumentCompressor",
    "ECOEmbeddings",
    "ECOForgetClassifier",
    "ECOMiddleware",
    "ECORouter",
]


def __getattr__(name: str) -> object:
    # The middleware and the decision-model adapter need the `langchain` package (agents) and a
    # recent langchain-core; load them on first use so the chat model works without them.
    if name == "ECOMiddleware":
        from eco_integrations.langchain.middleware import ECOMiddleware

        return ECOMiddleware
    if name == "ECOForgetClassifier":
        from eco_integrations.langchain.decisions import ECOForgetClassifier

        return ECOForgetClassifier
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)

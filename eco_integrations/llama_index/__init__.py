"""LlamaIndex skin over the ECO engine.

>>> from eco_integrations.llama_index import ECOHuggingFaceLLM, ECOQueryEngine     # doctest: +SKIP
>>> llm = ECOHuggingFaceLLM.from_pretrained(guard="guards/harry-potter")          # doctest: +SKIP
>>> engine = ECOQueryEngine.from_index(index, llm=llm)                            # doctest: +SKIP
>>> print(engine.query("Who is Harry Potter?"))                                   # doctest: +SKIP

Four pieces, usable alone or together:

* :class:`ECOHuggingFaceLLM`: a ``CustomLLM`` that answers flagged prompts from corrupted embeddings.
* :class:`ECOQueryEngine`: wraps any query engine; classifies the user's question once per query
  and carries that decision through every LLM call of the query.
* :class:`ECONodeFilter`: a node postprocessor that drops (or marks) retrieved nodes about a
  forget target, so retrieval cannot put forgotten facts back into the prompt.
* :class:`ECOEmbedding`: the embedded sentence encoder as a LlamaIndex embedding model.
"""

from __future__ import annotations

import importlib.util

from eco_integrations.exceptions import MissingDependencyError

if (
    importlib.util.find_spec("llama_index") is None
    or importlib.util.find_spec("llama_index.core") is None
):
    _msg = (
        "eco_integrations.llama_index needs llama-index-core, which is not installed. "
        "Install it with: pip install 'eco-integrations[llamaindex]'"
    )
    raise MissingDependencyError(_msg)

from eco_integrations.llama_index._context import active_decision, decision_scope
from eco_integrations.llama_index.embeddings import ECOEmbedding
from eco_integrations.llama_index.events import ECODecisionEvent, ECONodeFilterEvent
from eco_integrations.llama_index.llms import ECOHuggingFaceLLM
from eco_integrations.llama_index.postprocessors import ECONodeFilter
from eco_integrations.llama_index.query_engine import ECOQueryEngine

__all__ = [
    "ECODecisionEvent",
    "ECOEmbedding",
    "ECOHuggingFaceLLM",
    "ECONodeFilter",
    "ECONodeFilterEvent",
    "ECOQueryEngine",
    "active_decision",
    "decision_scope",
]

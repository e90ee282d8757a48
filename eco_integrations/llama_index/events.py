"""ECO events for the LlamaIndex instrumentation dispatcher.

Events are dispatched with ``llama_index.core.instrumentation``; a handler added to the root
dispatcher receives them, and ``span_id`` places them under the query (or LLM) span that was
active, so tracing integrations nest them correctly. No event holds prompt, question or node
text: only scores, thresholds, ids and the SHA-256 of the classified text.
"""

from __future__ import annotations

from typing import Literal

# Re-exported by llama_index.core.instrumentation (the documented import) without an __all__.
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.events import BaseEvent
from pydantic import Field

from eco_integrations.config import Decision

dispatcher = get_dispatcher(__name__)

DecisionScope = Literal["query", "llm", "node"]


class ECODecisionEvent(BaseEvent):
    """The guard's verdict on one query (or one LLM call made outside a query).

    >>> from llama_index.core.instrumentation import get_dispatcher
    >>> from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    >>> class Printer(BaseEventHandler):
    ...     def handle(self, event, **kwargs):
    ...         if isinstance(event, ECODecisionEvent):
    ...             print(event.flagged, event.score, event.span_id)
    >>> get_dispatcher().add_event_handler(Printer())                 # doctest: +SKIP
    """

    scope: DecisionScope = Field(
        description="query: decided once for the query; llm: decided by the LLM on its own input; node: escalated by ECONodeFilter(action='mark')."
    )
    flagged: bool
    score: float | None
    threshold: float | None
    target: str | None
    corrupted: bool
    mode: str
    guard_id: str | None
    guard_version: int | None
    policy_version: str
    text_sha256: str = Field(
        description="SHA-256 of the classified text; the text itself is never emitted."
    )
    latency_ms: float = 0.0

    @classmethod
    def class_name(cls) -> str:
        return "ECODecisionEvent"

    @classmethod
    def from_decision(cls, decision: Decision, *, scope: DecisionScope) -> ECODecisionEvent:
        payload = decision.event_payload()
        return cls(scope=scope, **{k: payload[k] for k in _DECISION_FIELDS})


_DECISION_FIELDS = (
    "flagged",
    "score",
    "threshold",
    "target",
    "corrupted",
    "mode",
    "guard_id",
    "guard_version",
    "policy_version",
    "text_sha256",
    "latency_ms",
)


class ECONodeFilterEvent(BaseEvent):
    """What :class:`~eco_integrations.llama_index.ECONodeFilter` did to one batch of retrieved nodes."""

    action: str = Field(description="drop or mark")
    mode: str = Field(description="enforce (act on flagged nodes) or shadow (score only)")
    n_nodes: int
    n_scored: int = Field(description="Nodes with text (nodes without text are kept unscored).")
    n_flagged: int
    n_dropped: int
    flagged_node_ids: list[str] = Field(default_factory=list)
    max_score: float | None = None
    guard_id: str | None = None
    guard_version: int | None = None

    @classmethod
    def class_name(cls) -> str:
        return "ECONodeFilterEvent"


def emit_decision(decision: Decision, *, scope: DecisionScope) -> ECODecisionEvent:
    """Dispatch an :class:`ECODecisionEvent` under the active span and return it."""
    event = ECODecisionEvent.from_decision(decision, scope=scope)
    dispatcher.event(event)
    return event

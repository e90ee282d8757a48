"""Guard the retrieved context: a node postprocessor that drops (or marks) nodes about a forget target."""

from __future__ import annotations

import logging
from typing import Any, Literal

from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from pydantic import ConfigDict, Field

from eco_integrations._passages import decide_retrieved, strongest
from eco_integrations.config import Decision, Mode, Threshold
from eco_integrations.engine import ECO, check_mode
from eco_integrations.exceptions import ConfigurationError, GuardFailureError, InvalidInputError
from eco_integrations.guard import Guard, unusable_score
from eco_integrations.llama_index._context import active_scope
from eco_integrations.llama_index.events import ECONodeFilterEvent, dispatcher, emit_decision

logger = logging.getLogger(__name__)


class ECONodeFilter(BaseNodePostprocessor):
    """Score retrieved nodes with the guard; drop the ones about a forget target, or mark them.

    >>> from eco_integrations.llama_index import ECONodeFilter
    >>> node_filter = ECONodeFilter(guard=guard)                                   # doctest: +SKIP
    >>> engine = index.as_query_engine(llm=llm, node_postprocessors=[node_filter])  # doctest: +SKIP

    Without it a benign-looking question can retrieve a passage about the forget target, and
    the model would read the forgotten fact straight from its context window: corrupting the
    question does not stop that.

    * ``action="drop"`` (default) removes flagged nodes.
    * ``action="mark"`` keeps them, sets ``node.metadata["eco_flagged"]``/``["eco_score"]``/
      ``["eco_target"]``, and escalates the running query's decision to flagged, so the LLM
      answers from corrupted embeddings, every content token selected (the kept node's facts
      are in the context, not only in the question's names). That needs a query scope
      (:class:`ECOQueryEngine`); outside one, only the metadata is set, and
      :meth:`ECOQueryEngine.synthesize` escalates from it when handed the marked nodes
      (``retrieve`` then ``synthesize``). The whole answer is corrupted, so a benign
      question that retrieves one stray forget-target node is corrupted too: prefer ``drop``
      when retrieval is noisy (large ``similarity_top_k``).
    * ``mode="shadow"`` scores and emits the event but changes nothing; ``"off"`` passes the
      nodes through unscored. ``None`` (default) is the engine's mode, ``enforce`` for a guard.

    Given an engine (``ECONodeFilter(engine)``, as :meth:`ECOQueryEngine.from_index` builds it),
    nodes are decided as the engine decides prompts: its policy's threshold unless ``threshold``
    is set, its mode, and its answer to a failing guard. Given only a guard (to filter the
    context of any LLM), ``threshold`` or the guard's own thresholds apply, and a guard that
    fails (a non-finite score) fails the retrieval rather than pass its nodes unscored.

    A node is flagged when its text, or with ``split_sentences=True`` any one of its sentences,
    scores above the target's threshold: a long chunk that mentions the target in one sentence
    is diluted as a whole but not sentence by sentence. The text scored is what the LLM would
    see (``MetadataMode.LLM``: text plus LLM-visible metadata). Nodes with no text (empty, or
    an image-only node) have nothing to leak: they are kept unchanged and counted in the event
    as unscored.
    """

    # validate_assignment: a bad value is refused where it is set, not at the next call.
    model_config = ConfigDict(
        arbitrary_types_allowed=True, extra="forbid", validate_assignment=True
    )

    guard: Guard = Field(description="The fitted guard whose targets are forgotten.")
    engine: ECO | None = Field(
        default=None, exclude=True, description="The engine that decides (None: the guard alone)."
    )
    action: Literal["drop", "mark"] = Field(
        default="drop", description="drop flagged nodes, or keep and mark them."
    )
    mode: Mode | None = Field(
        default=None,
        description="enforce, shadow (score and report only) or off; None: the engine's.",
    )
    threshold: Threshold | None = Field(
        default=None,
        description="Override the thresholds (flagged means score > threshold); None keeps them.",
    )
    split_sentences: bool = Field(
        default=True, description="Also score each sentence; flag the node if any is flagged."
    )

    def __init__(
        self, guard: Guard | ECO | None = None, *, engine: ECO | None = None, **kwargs: Any
    ) -> None:
        if isinstance(guard, ECO):
            guard, engine = None, guard if engine is None else engine
        if engine is not None:
            if not isinstance(engine, ECO):
                msg = f"ECONodeFilter(engine=...) takes an ECO engine, got {type(engine).__name__}."
                raise ConfigurationError(msg)
            guard = guard if guard is not None else engine.guard
        if not isinstance(guard, Guard):
            msg = (
                "ECONodeFilter needs a fitted eco_integrations Guard, or an ECO engine holding "
                f"one, got {type(guard).__name__}."
            )
            raise ConfigurationError(msg)
        if "mode" in kwargs and kwargs["mode"] is not None:
            kwargs["mode"] = check_mode(kwargs["mode"])
        super().__init__(guard=guard, engine=engine, **kwargs)

    @property
    def effective_mode(self) -> Mode:
        """The mode nodes are decided in: this filter's, else the engine's, else enforce."""
        if self.mode is not None:
            return self.mode
        return self.engine.mode if self.engine is not None else "enforce"

    def _decide(self, texts: list[str]) -> list[Decision]:
        if self.engine is not None:
            return self.engine.decide_texts(texts, mode=self.mode, threshold=self.threshold)
        decisions = self.guard.decide_many(texts, threshold=self.threshold)
        problem = unusable_score(decisions)
        if problem is not None:
            # Fail closed, as the engine does: a broken guard must not wave nodes through.
            msg = f"The guard failed ({problem}); the retrieved nodes are refused rather than passed unscored."
            raise GuardFailureError(msg)
        return decisions

    @classmethod
    def class_name(cls) -> str:
        return "ECONodeFilter"

    def score_nodes(self, nodes: list[NodeWithScore]) -> list[Decision | None]:
        """One decision per node (``None`` for a node without text, or in ``off`` mode), in one
        guard pass."""
        for i, node in enumerate(nodes):
            if not isinstance(node, NodeWithScore):
                msg = f"nodes[{i}] is {type(node).__name__}, not a NodeWithScore; wrap it as NodeWithScore(node=TextNode(text=...))."
                raise InvalidInputError(msg)
        if self.effective_mode == "off":
            return [None] * len(nodes)
        texts = [node.node.get_content(metadata_mode=MetadataMode.LLM) for node in nodes]
        verdicts = decide_retrieved(
            [t if isinstance(t, str) else "" for t in texts],
            self._decide,
            split_sentences=self.split_sentences,
        )
        return [v.decision if v is not None else None for v in verdicts]

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        verdicts = self.score_nodes(nodes)
        flagged = [i for i, v in enumerate(verdicts) if v is not None and v.flagged]
        enforce = self.effective_mode == "enforce"
        kept: list[NodeWithScore] = []
        for i, node in enumerate(nodes):
            verdict = verdicts[i]
            if verdict is None or not verdict.flagged or not enforce:
                kept.append(node)
            elif self.action == "mark":
                node.node.metadata.update(
                    {
                        "eco_flagged": True,
                        "eco_score": verdict.score,
                        "eco_target": verdict.target,
                        "eco_threshold": verdict.threshold,
                    }
                )
                # The marks are for the pipeline, not the prompt: keep them out of the LLM's context.
                for key in _MARKS:
                    if key not in node.node.excluded_llm_metadata_keys:
                        node.node.excluded_llm_metadata_keys.append(key)
                kept.append(node)
        scores = [v.score for v in verdicts if v is not None and v.score is not None]
        dispatcher.event(
            ECONodeFilterEvent(
                action=self.action,
                mode=self.effective_mode,
                n_nodes=len(nodes),
                n_scored=sum(v is not None for v in verdicts),
                n_flagged=len(flagged),
                n_dropped=len(nodes) - len(kept),
                flagged_node_ids=[nodes[i].node.node_id for i in flagged],
                max_score=max(scores) if scores else None,
                guard_id=self.guard.guard_id,
                guard_version=self.guard.version,
            )
        )
        scope = active_scope()
        if scope is not None and nodes and not kept:
            scope.dropped_every_node = True
        if enforce and self.action == "mark" and flagged:
            top = strongest([verdicts[i] for i in flagged])  # type: ignore[misc]
            if active_scope() is None:
                logger.warning(
                    "ECONodeFilter(action='mark') flagged nodes outside a query's decision "
                    "scope: they are marked, and an answer from them is corrupted only through "
                    "ECOQueryEngine (query, or synthesize with these nodes) or decision_scope."
                )
            else:
                escalate(top.score, top.threshold, top.target, top.latency_ms)
        return kept


_MARKS = ("eco_flagged", "eco_score", "eco_target", "eco_threshold")


def escalate(
    score: float | None, threshold: float | None, target: str | None, latency_ms: float
) -> None:
    """Make the running query's decision flagged, because its context is about a forget target."""
    scope = active_scope()
    if scope is None:
        return
    current = scope.decision
    if current.mode == "off":
        return
    scope.context_flagged = True
    if current.flagged:
        return
    # The question's decision, escalated by the node's verdict (its hash still covers the question).
    scope.decision = current.model_copy(
        update={
            "flagged": True,
            "score": score,
            "threshold": threshold,
            "target": target,
            "corrupted": current.mode == "enforce",
            "latency_ms": current.latency_ms + latency_ms,
        }
    )
    emit_decision(scope.decision, scope="node")


def escalate_for_marked(nodes: list[NodeWithScore]) -> None:
    """Escalate the running query's decision for nodes an ``ECONodeFilter(action="mark")``
    marked earlier, outside it (``ECOQueryEngine.retrieve``, then ``synthesize``)."""
    marked = [
        n.node.metadata
        for n in nodes
        if isinstance(n, NodeWithScore) and n.node.metadata.get("eco_flagged") is True
    ]
    if not marked:
        return
    top = max(marked, key=lambda m: m.get("eco_score") or 0.0)
    escalate(top.get("eco_score"), top.get("eco_threshold"), top.get("eco_target"), 0.0)

"""Decision helpers shared by the chat model, the router and the middleware."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.runnables import RunnableConfig, ensure_config

from eco_integrations.config import Decision
from eco_integrations.exceptions import InvalidInputError

EVENT_NAME = "eco_decision"
"""Name of the custom callback event every ECO call emits (payload: ``Decision.event_payload()``)."""

DECISION_KWARG = "eco_decision"
"""Keyword (invoke/bind/model_settings) that hands an already-made decision to the chat model."""


def as_decision(value: object) -> Decision:
    """Accept a :class:`Decision` or its event payload (a dict, e.g. read back from agent state)."""
    if isinstance(value, Decision):
        return value
    if isinstance(value, Mapping):
        return Decision.model_validate(dict(value))
    msg = f"{DECISION_KWARG} must be a Decision or its event_payload() dict, got {type(value).__name__}."
    raise InvalidInputError(msg)


def apply_threshold(decision: Decision, threshold: float | None) -> Decision:
    """Re-decide with another threshold: flagged means ``score > threshold``.

    Decisions made in "off" mode carry no score and stay as they are.
    """
    if threshold is None or decision.score is None:
        return decision
    flagged = decision.score > threshold
    return decision.model_copy(update={
        "threshold": float(threshold),
        "flagged": flagged,
        "target": decision.target if flagged else None,
        "corrupted": flagged and decision.mode == "enforce",
    })


def decision_metadata(decision: Decision) -> dict[str, Any]:
    """Run metadata for traces: the verdict, never the prompt text."""
    return {
        "eco_flagged": decision.flagged,
        "eco_corrupted": decision.corrupted,
        "eco_score": decision.score,
        "eco_threshold": decision.threshold,
        "eco_target": decision.target,
        "eco_mode": decision.mode,
        "eco_policy_version": decision.policy_version,
    }


def decision_tag(decision: Decision) -> str:
    return "eco:flagged" if decision.flagged else "eco:clean"


def config_with_decision(config: RunnableConfig | None, decision: Decision) -> RunnableConfig:
    """A copy of ``config`` whose tags and metadata carry the decision."""
    config = ensure_config(config)
    return {
        **config,
        "tags": [*config.get("tags", []), decision_tag(decision)],
        "metadata": {**config.get("metadata", {}), **decision_metadata(decision)},
    }

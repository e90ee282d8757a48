"""How the LangChain skin reports a decision: the custom event, run tags and run metadata.

One module, so the chat model, the router and the middleware say the same thing the same way.
The decision itself is always made by the engine (:meth:`ECO.prepare` / :meth:`ECO.decide_texts`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from typing import Annotated, Any

from langchain_core.callbacks import (
    AsyncCallbackManager,
    CallbackManager,
    Callbacks,
    adispatch_custom_event,
    dispatch_custom_event,
)
from langchain_core.callbacks.base import BaseCallbackManager
from langchain_core.callbacks.manager import AsyncRunManager, RunManager
from langchain_core.runnables import RunnableConfig, ensure_config
from langchain_core.runnables.config import (
    get_async_callback_manager_for_config,
    get_callback_manager_for_config,
)
from pydantic import BeforeValidator, ValidationError

from eco_integrations.config import Decision
from eco_integrations.engine import ECO
from eco_integrations.exceptions import InvalidInputError

EVENT_NAME = "eco_decision"
"""Name of the custom callback event every ECO call emits.

Its payload is ``Decision.event_payload()``: the verdict and a hash, never the prompt text."""

DOCUMENTS_EVENT_NAME = "eco_documents"
"""Name of the custom event :class:`ECODocumentCompressor` emits once per call.

Its payload counts the documents scored, flagged, dropped and redacted, with each flagged
document's index, id and decision (a hash instead of its text), never the documents' text."""

DECISION_KWARG = "eco_decision"
"""Keyword (invoke/bind/model_settings) that hands an already-made decision to the chat model."""


ROUTED_DECISION_KEY = "eco_routed_decision"
"""Run metadata key under which :class:`ECORouter` hands its decision (``event_payload()``) down
to whatever runs its branch: a chat model inside ``with_retry()``, ``with_fallbacks()`` or a
sequence cannot be handed a keyword, but inherits the run's metadata."""


SEAL_KEY = "eco_seal"
"""Beside a decision handed on as data (agent state, run metadata): its MAC under a key this
process draws at import, so only a decision this process made is taken back as made."""

_SEAL_SECRET = secrets.token_bytes(32)


def seal(payload: Mapping[str, object]) -> str:
    """The MAC of a decision's ``event_payload()``."""
    canonical = json.dumps(dict(payload), sort_keys=True, separators=(",", ":"))
    return hmac.new(_SEAL_SECRET, canonical.encode(), hashlib.sha256).hexdigest()


def sealed_payload(decision: Decision) -> dict[str, object]:
    """The decision's event payload with its seal under :data:`SEAL_KEY` (run metadata)."""
    payload = decision.event_payload()
    return {**payload, SEAL_KEY: seal(payload)}


def unsealed(payload: object, mac: object) -> Decision | None:
    """The decision in ``payload`` if ``mac`` is its seal; None for anything else: a decision a
    caller wrote (a graph's input, a client's run metadata), edited, or sealed by another
    process or before a restart (then it is decided again)."""
    if not isinstance(payload, Mapping) or not isinstance(mac, str):
        return None
    body = {k: v for k, v in payload.items() if k != SEAL_KEY}
    if not hmac.compare_digest(mac, seal(body)):
        return None
    try:
        return Decision.model_validate(body)
    except ValidationError:
        return None


def as_decision(value: object) -> Decision:
    """Accept a :class:`Decision` or its event payload (a dict, e.g. read back from agent state)."""
    if isinstance(value, Decision):
        return value
    if isinstance(value, Mapping):
        return Decision.model_validate(dict(value))
    msg = (
        f"{DECISION_KWARG} must be a Decision or its event_payload() dict, "
        f"got {type(value).__name__}."
    )
    raise InvalidInputError(msg)


def _is_chat_model(value: object) -> bool:
    # Duck-typed: chat_models imports this module, so ChatECOHuggingFace cannot be imported here.
    return hasattr(value, "engine_view") and hasattr(value, "_generate")


def _engine_not_chat_model(value: object) -> object:
    # Handed ChatECOHuggingFace where the engine belongs, a skin would decide with the bare
    # engine and lose the chat model's threshold, mode and window.
    if _is_chat_model(value):
        msg = (
            f"engine= takes an ECO engine, got a {type(value).__name__}; build with "
            "from_chat_model(chat, ...) to decide as that chat model does (its threshold, mode "
            "and classify_window)."
        )
        raise InvalidInputError(msg)
    return value


EngineField = Annotated[ECO, BeforeValidator(_engine_not_chat_model)]
"""The type of a skin's ``engine`` field: an ECO engine, a chat model in its place named."""


def _chat_model_or_none(value: object) -> object:
    if value is not None and not _is_chat_model(value):
        msg = (
            f"chat_model takes a ChatECOHuggingFace (whose settings the decisions follow), got "
            f"{type(value).__name__}; for an engine pass engine= alone."
        )
        raise InvalidInputError(msg)
    return value


ChatModelField = Annotated[Any, BeforeValidator(_chat_model_or_none)]
"""The type of a skin's ``chat_model`` field: None, or the ChatECOHuggingFace it follows."""


def deciding_engine(engine: ECO, chat_model: Any) -> ECO:
    """What a skin decides with: ``chat_model``'s engine view as the chat model is set now (its
    threshold, mode and window, changed since the skin was built or not), else ``engine``."""
    if chat_model is None:
        return engine
    view: ECO = chat_model.engine_view
    return view


def chat_model_engine(chat: object, skin: type) -> ECO:
    """The engine ``chat`` (a ChatECOHuggingFace) decides with, its threshold, mode and window
    applied: what a skin's ``from_chat_model`` builds on. Anything else is named."""
    view = chat.engine_view if _is_chat_model(chat) else None  # type: ignore[attr-defined]
    if not isinstance(view, ECO):
        msg = (
            f"from_chat_model takes a ChatECOHuggingFace, got {type(chat).__name__}; for an "
            f"engine use {skin.__name__}(engine=...)."
        )
        raise InvalidInputError(msg)
    return view


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
    """A copy of ``config`` whose tags and metadata carry the decision (for a run to start)."""
    config = ensure_config(config)
    return {
        **config,
        "tags": [*config.get("tags", []), decision_tag(decision)],
        "metadata": {**config.get("metadata", {}), **decision_metadata(decision)},
    }


def _event_manager(
    run_manager: RunManager | AsyncRunManager, decision: Decision, cls: type[BaseCallbackManager]
) -> Any:
    # A manager whose parent is this run, so the event hangs on it (an LLM run manager has no
    # get_child()); the event carries the decision's tag, which a started run cannot take.
    return cls(
        handlers=run_manager.handlers,
        inheritable_handlers=run_manager.inheritable_handlers,
        parent_run_id=run_manager.run_id,
        tags=[*run_manager.tags, decision_tag(decision)],
        inheritable_tags=run_manager.inheritable_tags,
        metadata=run_manager.metadata,
        inheritable_metadata=run_manager.inheritable_metadata,
    )


def emit_decision(
    decision: Decision, run_manager: RunManager | None, run: RunnableConfig | None = None
) -> None:
    """Send the ``eco_decision`` event on ``run_manager``'s run.

    LangChain's ``stream()`` calls the streaming hook without a run manager: then the event goes
    to ``run`` (the stream's own config, whose ``run_id`` names its run), or else to the
    enclosing run, if the call happens inside one (a chain, an agent, a graph).
    """
    payload = decision.event_payload()
    if run_manager is not None:
        manager: CallbackManager = _event_manager(run_manager, decision, CallbackManager)
        manager.on_custom_event(EVENT_NAME, payload, run_id=run_manager.run_id)
        return
    if run is not None and run.get("run_id") is not None:
        get_callback_manager_for_config(run).on_custom_event(
            EVENT_NAME, payload, run_id=run["run_id"]
        )
        return
    config = ensure_config()
    if get_callback_manager_for_config(config).parent_run_id is not None:
        dispatch_custom_event(EVENT_NAME, payload, config=config)


async def aemit_decision(
    decision: Decision, run_manager: AsyncRunManager | None, run: RunnableConfig | None = None
) -> None:
    """:func:`emit_decision` for async runs."""
    payload = decision.event_payload()
    if run_manager is not None:
        manager: AsyncCallbackManager = _event_manager(run_manager, decision, AsyncCallbackManager)
        await manager.on_custom_event(EVENT_NAME, payload, run_id=run_manager.run_id)
        return
    if run is not None and run.get("run_id") is not None:
        await get_async_callback_manager_for_config(run).on_custom_event(
            EVENT_NAME, payload, run_id=run["run_id"]
        )
        return
    config = ensure_config()
    if get_async_callback_manager_for_config(config).parent_run_id is not None:
        await adispatch_custom_event(EVENT_NAME, payload, config=config)


def emit_event(name: str, payload: dict[str, Any], callbacks: Callbacks) -> None:
    """Send a custom event to the run ``callbacks`` hang on, or else to the enclosing run.

    A retriever hands its compressor ``run_manager.get_child()``: the event goes to the
    retriever's run. Outside any run there is nothing to hang it on, and it is not sent.
    """
    config = ensure_config({"callbacks": callbacks})
    if get_callback_manager_for_config(config).parent_run_id is not None:
        dispatch_custom_event(name, payload, config=config)


async def aemit_event(name: str, payload: dict[str, Any], callbacks: Callbacks) -> None:
    """:func:`emit_event` for async runs."""
    config = ensure_config({"callbacks": callbacks})
    if get_async_callback_manager_for_config(config).parent_run_id is not None:
        await adispatch_custom_event(name, payload, config=config)

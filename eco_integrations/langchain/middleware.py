"""``ECOMiddleware``: ECO for ``langchain.agents.create_agent``, one decision per user turn.

The decision is made in ``before_agent`` (once per agent invocation, i.e. per user turn), kept
in agent state as ``eco_decision`` (its event payload: no prompt text), and handed to every
model call of the turn through ``request.override(model_settings={"eco_decision": ...})``.
Nothing is kept on the middleware instance, so one middleware serves concurrent agents.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langchain.agents.middleware.types import (
    AgentMiddleware,
    AgentState,
    ModelRequest,
    ModelResponse,
    TracePolicy,
    omit_payload,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from typing_extensions import NotRequired

from eco_integrations.config import Decision, Mode
from eco_integrations.encoder import text_sha256
from eco_integrations.engine import ECO
from eco_integrations.exceptions import ConfigurationError
from eco_integrations.langchain._decision import DECISION_KWARG, apply_threshold, as_decision
from eco_integrations.langchain._messages import template_supports_tools, to_chat_dicts
from eco_integrations.langchain.chat_models import ChatECOHuggingFace

STATE_KEY = "eco_decision"


class ECOState(AgentState):
    """Agent state with the current turn's decision (``Decision.event_payload()``)."""

    eco_decision: NotRequired[dict[str, Any]]


class ECOMiddleware(AgentMiddleware[ECOState, Any]):
    """Classify each user turn once and pass the decision to every model call of that turn.

    Example:
        .. code-block:: python

            from langchain.agents import create_agent

            chat = ChatECOHuggingFace.from_pretrained(guard=guard)
            agent = create_agent(chat, tools=[lookup], middleware=[ECOMiddleware(chat)])
            agent.invoke({"messages": [("user", "Who is Harry Potter?")]})

    Pass the ECO chat model itself (its engine, threshold and mode are used), or an
    :class:`ECO` engine. When the agent's model is not an ECO chat model, corrupted turns are
    routed to ``flagged_model`` (defaults to the chat model passed in) and other turns run on
    the agent's model unchanged.
    """

    state_schema = ECOState
    # Hook spans would otherwise copy the conversation (the forget question) into traces.
    trace_policy = TracePolicy(process_inputs=omit_payload)

    def __init__(
        self,
        model: ChatECOHuggingFace | ECO,
        *,
        flagged_model: BaseChatModel | None = None,
        mode: Mode | None = None,
        threshold: float | None = None,
    ) -> None:
        super().__init__()
        if isinstance(model, ChatECOHuggingFace):
            self.engine = model._eco
            self.flagged_model: BaseChatModel | None = flagged_model or model
            self.mode = mode if mode is not None else model.mode
            self.threshold = threshold if threshold is not None else model.threshold
        elif isinstance(model, ECO):
            self.engine = model
            self.flagged_model = flagged_model
            self.mode = mode
            self.threshold = threshold
        else:
            msg = f"ECOMiddleware takes a ChatECOHuggingFace or an ECO engine, got {type(model).__name__}."
            raise ConfigurationError(msg)

    # -- the decision --------------------------------------------------------------------------
    def _classified_text(self, messages: Sequence[BaseMessage]) -> str:
        chat = to_chat_dicts(messages, native_tools=template_supports_tools(self.engine.backend.tokenizer))
        return self.engine.classified_text(chat)

    def _classify(self, messages: Sequence[BaseMessage]) -> Decision:
        decision = self.engine.decide_texts([self._classified_text(messages)], mode=self.mode)[0]
        return apply_threshold(decision, self.threshold)

    def _current(self, state: dict[str, Any]) -> Decision | None:
        """The stored decision if it was made for the conversation's current user turn(s)."""
        stored = state.get(STATE_KEY)
        if stored is None:
            return None
        decision = as_decision(stored)
        if decision.text_sha256 != text_sha256(self._classified_text(state["messages"])):
            return None  # a new user turn arrived without before_agent (e.g. state edited mid-run)
        return decision

    def before_agent(self, state: ECOState, runtime: Any) -> dict[str, Any] | None:
        """Classify the latest user turn once, before the agent loop starts."""
        if self._current(dict(state)) is not None:
            return None
        return {STATE_KEY: self._classify(state["messages"]).event_payload()}

    async def abefore_agent(self, state: ECOState, runtime: Any) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.before_agent, state, runtime)

    # -- every model call ----------------------------------------------------------------------
    def _request(self, request: ModelRequest, decision: Decision) -> ModelRequest:
        settings = {**request.model_settings, DECISION_KWARG: decision}
        if isinstance(request.model, ChatECOHuggingFace):
            return request.override(model_settings=settings)
        if decision.corrupted and self.flagged_model is not None:
            # Only an ECO model reads eco_decision; another provider would reject the keyword.
            if isinstance(self.flagged_model, ChatECOHuggingFace):
                return request.override(model=self.flagged_model, model_settings=settings)
            return request.override(model=self.flagged_model)
        return request

    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]) -> ModelResponse:
        decision = self._current(dict(request.state)) or self._classify(request.state["messages"])
        return handler(self._request(request, decision))

    async def awrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[ModelResponse]]) -> ModelResponse:
        state = dict(request.state)
        decision = await asyncio.to_thread(lambda: self._current(state) or self._classify(state["messages"]))
        return await handler(self._request(request, decision))

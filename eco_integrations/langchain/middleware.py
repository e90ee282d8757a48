"""``ECOMiddleware``: ECO for ``langchain.agents.create_agent``, one decision per user turn.

The decision is made in ``before_agent`` (once per agent invocation, i.e. per user turn) from
the classified text alone (no rendering), kept in agent state as ``eco_decision`` (its event
payload: no prompt text), and handed to every model call of the turn through
``request.override(model_settings={"eco_decision": ...})``; the ECO chat model prepares each
call with it, so each model call renders its prompt exactly once. A policy whose
``classify_roles`` reads what changes within a turn (the agent's ``system_prompt``, tool
results, the agent's own steps) gets a decision at each model call on what it reads then,
written back to ``eco_decision`` with the model's answer (LangChain 1.2.9's
``ExtendedModelResponse``; before it the state keeps the turn's first decision).
Nothing is kept on the middleware instance, so one middleware serves concurrent agents.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

from langchain.agents.middleware import types as middleware_types
from langchain.agents.middleware.types import (
    AgentMiddleware,
    AgentState,
    ModelCallResult,
    ModelRequest,
    ModelResponse,
    OmitFromInput,
    PrivateStateAttr,
    TracePolicy,
    omit_payload,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, SystemMessage
from langgraph.types import Command
from typing_extensions import NotRequired

from eco_integrations._normalize import normalized_sha256
from eco_integrations.config import Decision, Mode
from eco_integrations.engine import ECO, check_mode
from eco_integrations.exceptions import ConfigurationError
from eco_integrations.guard import check_threshold
from eco_integrations.langchain._decision import DECISION_KWARG, seal, unsealed
from eco_integrations.langchain._messages import classified_text, decide_conversation
from eco_integrations.langchain.chat_models import ChatECOHuggingFace

STATE_KEY = "eco_decision"
SEAL_STATE_KEY = "eco_seal"
# A model call's answer with a state update (langchain >= 1.2.9); None before it.
_WITH_STATE_UPDATE: Any = getattr(middleware_types, "ExtendedModelResponse", None)


class ECOState(AgentState):
    """Agent state with the current turn's decision (``Decision.event_payload()``).

    Not part of the agent's input, and taken back only with its seal (kept privately beside
    it): a decision written by a caller, edited in the state, or made under another policy is
    made again."""

    eco_decision: NotRequired[Annotated[dict[str, Any], OmitFromInput]]
    eco_seal: NotRequired[Annotated[str, PrivateStateAttr]]


class ECOMiddleware(AgentMiddleware[ECOState, Any]):
    """Classify each user turn once and pass the decision to every model call of that turn.

    Example:
        .. code-block:: python

            from langchain.agents import create_agent

            chat = ChatECOHuggingFace.from_pretrained(guard=guard)
            agent = create_agent(chat, tools=[lookup], middleware=[ECOMiddleware(chat)])
            agent.invoke({"messages": [("user", "Who is Harry Potter?")]})

    Pass the ECO chat model itself (its :attr:`~ChatECOHuggingFace.engine_view` decides, with
    the model's window, threshold and mode), or an :class:`ECO` engine. When the agent's model
    is not an ECO chat model, corrupted turns are routed to ``flagged_model`` (defaults to the
    chat model passed in, or to a ``ChatECOHuggingFace`` over the engine passed in) and other
    turns run on the agent's model unchanged.
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
        # Checked here rather than on the agent's first turn, deep inside langgraph.
        mode = check_mode(mode) if mode is not None else None
        threshold = check_threshold(threshold)
        if flagged_model is not None and not isinstance(flagged_model, BaseChatModel):
            msg = (
                f"flagged_model must be a LangChain chat model, got {type(flagged_model).__name__}."
            )
            raise ConfigurationError(msg)
        self._chat: ChatECOHuggingFace | None = None
        if isinstance(model, ChatECOHuggingFace):
            self._chat = model  # its engine view is read per call: it follows the model's fields
            self.flagged_model: BaseChatModel | None = flagged_model or model
            self.mode = mode
            self.threshold = threshold
        elif isinstance(model, ECO):
            self._engine = model
            # Without a route, a flagged turn on a non-ECO agent model would be answered plainly
            # while its decision says corrupted.
            self.flagged_model = flagged_model or ChatECOHuggingFace(engine=model)
            self.mode = mode
            self.threshold = threshold
        else:
            kind = type(model).__name__
            msg = f"ECOMiddleware takes a ChatECOHuggingFace or an ECO engine, got {kind}."
            raise ConfigurationError(msg)

    @property
    def engine(self) -> ECO:
        """The engine that decides: the chat model's view (its window, threshold and mode, as
        they are now), or the engine passed in."""
        return self._chat.engine_view if self._chat is not None else self._engine

    # -- the decision --------------------------------------------------------------------------
    def _classify(self, messages: Sequence[BaseMessage]) -> Decision:
        return decide_conversation(self.engine, messages, mode=self.mode, threshold=self.threshold)

    @staticmethod
    def _read(messages: Sequence[BaseMessage], system_prompt: str | None) -> list[BaseMessage]:
        # What the model reads: the agent's system prompt first (a policy whose classify_roles
        # lists "system" classifies it; for the others it changes nothing).
        return [SystemMessage(system_prompt), *messages] if system_prompt else list(messages)

    def _current(self, state: dict[str, Any], read: Sequence[BaseMessage]) -> Decision | None:
        """The stored decision if this process made it, under the policy that decides now,
        for ``read``, what the model reads now."""
        decision = unsealed(state.get(STATE_KEY), state.get(SEAL_STATE_KEY))
        if decision is None or not self._decides_as_now(decision):
            # A decision from the caller, a restart, or a policy since changed (shadow to
            # enforce, a lower threshold): decided again.
            return None
        if decision.text_sha256 != normalized_sha256(classified_text(self.engine, read)):
            # A new user turn arrived without before_agent (state edited mid-run), or the policy
            # reads what changes within a turn (tool results, the agent's system prompt).
            return None
        return decision

    def _decides_as_now(self, decision: Decision) -> bool:
        engine = self.engine
        guard = engine.guard
        return (
            decision.policy_version == engine.policy_version
            and decision.mode == (self.mode or engine.mode)
            and (decision.guard_id, decision.guard_version)
            == ((guard.guard_id, guard.version) if guard is not None else (None, None))
            and (
                self.threshold is None
                or decision.mode == "off"
                or decision.threshold == self.threshold
            )
        )

    @staticmethod
    def _stored(decision: Decision) -> dict[str, Any]:
        payload = decision.event_payload()
        return {STATE_KEY: payload, SEAL_STATE_KEY: seal(payload)}

    def _turn_decision(
        self, state: dict[str, Any], system_prompt: str | None = None
    ) -> tuple[Decision, bool]:
        """The decision stored for this turn, or a new one (flagged True) for what the model
        reads now."""
        read = self._read(state["messages"], system_prompt)
        stored = self._current(state, read)
        return (stored, False) if stored is not None else (self._classify(read), True)

    @staticmethod
    def _answer(response: ModelResponse, decision: Decision, new: bool) -> ModelCallResult:
        """The model's answer, with a new decision written to the state beside it, so that
        ``eco_decision`` is the one this answer was made under."""
        if not new or _WITH_STATE_UPDATE is None:
            return response
        update: Command[Any] = Command(update=ECOMiddleware._stored(decision))
        answer: ModelCallResult = _WITH_STATE_UPDATE(model_response=response, command=update)
        return answer

    def before_agent(self, state: ECOState, runtime: Any) -> dict[str, Any] | None:
        """Classify the latest user turn once, before the agent loop starts."""
        if self._current(dict(state), state["messages"]) is not None:
            return None
        return self._stored(self._classify(state["messages"]))

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

    def wrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]
    ) -> ModelCallResult:
        decision, new = self._turn_decision(dict(request.state), request.system_prompt)
        return self._answer(handler(self._request(request, decision)), decision, new)

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[ModelResponse]]
    ) -> ModelCallResult:
        decision, new = await asyncio.to_thread(
            self._turn_decision, dict(request.state), request.system_prompt
        )
        return self._answer(await handler(self._request(request, decision)), decision, new)

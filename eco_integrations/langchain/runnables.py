"""``ECORouter``: classify once, then send the request to a flagged or a benign runnable.

For users who already have a chain: ``prompt | ECORouter(engine=eco, flagged=eco_chat,
benign=plain_chat)``. The router is a traced run of its own (``_call_with_config``), forwards
config and callbacks to the branch it picks, and exposes ``threshold`` and ``mode`` for
per-request ``configurable_fields``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import patch_config
from pydantic import ConfigDict, Field, field_validator

from eco_integrations.config import Decision, Mode, Threshold
from eco_integrations.engine import ECO
from eco_integrations.exceptions import InvalidInputError
from eco_integrations.langchain._decision import (
    DECISION_KWARG,
    ROUTED_DECISION_KEY,
    ChatModelField,
    EngineField,
    aemit_decision,
    chat_model_engine,
    deciding_engine,
    decision_metadata,
    emit_decision,
    sealed_payload,
)
from eco_integrations.langchain._messages import coerce_messages, decide_conversation
from eco_integrations.langchain.chat_models import ChatECOHuggingFace

# The router makes the decision; a call option that would make another one is a contradiction.
_DECIDING_OPTIONS = (DECISION_KWARG, "eco_mode", "eco_threshold")


def _unbound(runnable: Runnable[Any, Any]) -> tuple[Runnable[Any, Any], dict[str, Any]]:
    """The runnable under ``bind()``'s layers, and the call options they fix (outermost last,
    as they apply)."""
    bound: dict[str, Any] = {}
    while isinstance(runnable, RunnableBinding):
        bound = {**runnable.kwargs, **bound}
        runnable = runnable.bound
    return runnable, bound


def _is_eco_model(runnable: Runnable[Any, Any]) -> bool:
    return isinstance(_unbound(runnable)[0], ChatECOHuggingFace)


def _check_call_options(kwargs: dict[str, Any]) -> None:
    deciding = [k for k in _DECIDING_OPTIONS if k in kwargs]
    if deciding:
        msg = (
            f"ECORouter makes the decision itself; drop {', '.join(deciding)} and set the "
            "router's threshold or mode (or expose them with configurable_fields)."
        )
        raise InvalidInputError(msg)


class ECORouter(RunnableSerializable[LanguageModelInput, Any]):
    """Route each request by the ECO decision: corrupted → ``flagged``, the rest → ``benign``.

    Example:
        .. code-block:: python

            from langchain_core.runnables import ConfigurableField

            router = ECORouter(engine=eco, flagged=eco_chat, benign=plain_chat).configurable_fields(
                threshold=ConfigurableField(id="eco_threshold"),
                mode=ConfigurableField(id="eco_mode"),
            )
            router.invoke("Who is Harry Potter?")
            router.invoke("Who is Harry Potter?", {"configurable": {"eco_mode": "shadow"}})

    In ``shadow`` mode flagged requests are scored and reported but go to ``benign``; in ``off``
    mode nothing is classified. When the flagged branch is a :class:`ChatECOHuggingFace`, it gets
    the router's decision (``eco_decision=``) instead of classifying again, and it emits the
    ``eco_decision`` event; otherwise the router emits it. A :class:`ChatECOHuggingFace` inside
    the branch (``with_retry()``, ``with_fallbacks()``, after a step of a sequence) reads the
    decision from the run's metadata and answers by it when its classified text is the one the
    router decided on (a step that changed the question leaves it to decide itself).
    :meth:`from_chat_model` decides as a chat model would; call options (``max_tokens=``...)
    go to the chosen branch.
    """

    # validate_assignment: a bad value is refused where it is set, not at the next call.
    model_config = ConfigDict(
        arbitrary_types_allowed=True, extra="forbid", validate_assignment=True
    )

    engine: EngineField = Field(exclude=True)
    """The engine whose guard and policy make the decision."""

    chat_model: ChatModelField | None = Field(default=None, exclude=True)
    """Set by ``from_chat_model``: decisions follow this chat model's engine, threshold, mode and
    window as they are at each call (``chat.mode = "shadow"`` reaches this too)."""

    flagged: Runnable[Any, Any]
    """Where corrupted (flagged, enforce-mode) requests go: usually an ECO chat model."""

    benign: Runnable[Any, Any]
    """Where every other request goes: usually the plain chat model."""

    threshold: Threshold | None = None
    """Override the guard's threshold: flagged means score > threshold. None keeps the guard's."""

    mode: Mode | None = None
    """``enforce`` | ``shadow`` | ``off``; None keeps the engine's mode."""

    # A field validator, not a model one: on assignment it runs before the value is stored, so
    # a refused branch leaves the router as it was.
    @field_validator("flagged")
    @classmethod
    def _flagged_takes_the_decision(cls, flagged: Runnable[Any, Any]) -> Runnable[Any, Any]:
        # A flagged ECO model with its own mode or threshold bound would refuse the router's
        # decision, and only when a flagged request came: say so now.
        if _is_eco_model(flagged):
            fixed = [k for k in _DECIDING_OPTIONS if k in _unbound(flagged)[1]]
            if fixed:
                msg = (
                    f"The flagged branch has {', '.join(fixed)} bound, but it answers with the "
                    "router's decision; set the router's threshold or mode instead and drop them."
                )
                raise InvalidInputError(msg)
        return flagged

    @classmethod
    def from_chat_model(
        cls, chat: ChatECOHuggingFace, *, benign: Runnable[Any, Any], **kwargs: Any
    ) -> ECORouter:
        """Route as ``chat`` would decide (its engine, threshold, mode and window, now and after
        a change to them), flagged requests to ``chat`` itself and the rest to ``benign``."""
        return cls(
            engine=chat_model_engine(chat, cls),
            chat_model=chat,
            flagged=chat,
            benign=benign,
            **kwargs,
        )

    @property
    def deciding_engine(self) -> ECO:
        """The engine decisions are made with now: the chat model's, if built from one."""
        return deciding_engine(self.engine, self.chat_model)

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return False

    @property
    def InputType(self) -> type[LanguageModelInput]:  # noqa: N802 - LangChain's name
        return LanguageModelInput  # type: ignore[return-value]

    # -- the decision --------------------------------------------------------------------------
    def decide(self, input: LanguageModelInput) -> Decision:
        """The engine's decision on the request's latest user turn(s), with this router's
        threshold and mode (no rendering: the branch renders the prompt once, if it is ECO's)."""
        return decide_conversation(
            self.deciding_engine,
            coerce_messages(input),
            mode=self.mode,
            threshold=self.threshold,
        )

    def _choose(self, decision: Decision) -> tuple[Runnable[Any, Any], str, dict[str, Any]]:
        branch = self.flagged if decision.corrupted else self.benign
        name = "flagged" if decision.corrupted else "benign"
        kwargs = {DECISION_KWARG: decision} if _is_eco_model(branch) else {}
        return branch, name, kwargs

    def _child_config(
        self, config: RunnableConfig, run_manager: Any, decision: Decision, name: str
    ) -> RunnableConfig:
        metadata = {
            **config.get("metadata", {}),
            **decision_metadata(decision),
            ROUTED_DECISION_KEY: sealed_payload(decision),
        }
        return patch_config(
            {**config, "metadata": metadata}, callbacks=run_manager.get_child(f"eco:{name}")
        )

    def _emit(
        self, decision: Decision, kwargs: dict[str, Any], run_manager: CallbackManagerForChainRun
    ) -> None:
        if not kwargs:  # an ECO chat model branch emits the event itself
            emit_decision(decision, run_manager)

    async def _aemit(
        self,
        decision: Decision,
        kwargs: dict[str, Any],
        run_manager: AsyncCallbackManagerForChainRun,
    ) -> None:
        if not kwargs:
            await aemit_decision(decision, run_manager)

    # -- invoke --------------------------------------------------------------------------------
    def _route(
        self,
        input: LanguageModelInput,
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        **options: Any,
    ) -> Any:
        decision = self.decide(input)
        branch, name, kwargs = self._choose(decision)
        self._emit(decision, kwargs, run_manager)
        return branch.invoke(
            input, self._child_config(config, run_manager, decision, name), **options, **kwargs
        )

    async def _aroute(
        self,
        input: LanguageModelInput,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **options: Any,
    ) -> Any:
        decision = await asyncio.to_thread(self.decide, input)
        branch, name, kwargs = self._choose(decision)
        await self._aemit(decision, kwargs, run_manager)
        return await branch.ainvoke(
            input, self._child_config(config, run_manager, decision, name), **options, **kwargs
        )

    def invoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Any:
        """Decide, then ``invoke`` the chosen branch; ``kwargs`` (call options such as
        ``max_tokens``) go to that branch."""
        _check_call_options(kwargs)
        return self._call_with_config(self._route, input, config, run_type="chain", **kwargs)

    async def ainvoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Any:
        _check_call_options(kwargs)
        return await self._acall_with_config(
            self._aroute, input, config, run_type="chain", **kwargs
        )

    # -- stream --------------------------------------------------------------------------------
    def _route_stream(
        self,
        inputs: Iterator[LanguageModelInput],
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        **options: Any,
    ) -> Iterator[Any]:
        input = _single(list(inputs))
        decision = self.decide(input)
        branch, name, kwargs = self._choose(decision)
        self._emit(decision, kwargs, run_manager)
        yield from branch.stream(
            input, self._child_config(config, run_manager, decision, name), **options, **kwargs
        )

    async def _aroute_stream(
        self,
        inputs: AsyncIterator[LanguageModelInput],
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **options: Any,
    ) -> AsyncIterator[Any]:
        input = _single([item async for item in inputs])
        decision = await asyncio.to_thread(self.decide, input)
        branch, name, kwargs = self._choose(decision)
        await self._aemit(decision, kwargs, run_manager)
        async for chunk in branch.astream(
            input, self._child_config(config, run_manager, decision, name), **options, **kwargs
        ):
            yield chunk

    def stream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        _check_call_options(kwargs)
        yield from self._transform_stream_with_config(
            iter([input]), self._route_stream, config, run_type="chain", **kwargs
        )

    async def astream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        _check_call_options(kwargs)

        async def one() -> AsyncIterator[LanguageModelInput]:
            yield input

        async for chunk in self._atransform_stream_with_config(
            one(), self._aroute_stream, config, run_type="chain", **kwargs
        ):
            yield chunk


def _single(items: list[Any]) -> Any:
    if len(items) != 1:
        msg = f"ECORouter routes one whole request at a time; got {len(items)} input chunks."
        raise InvalidInputError(msg)
    return items[0]

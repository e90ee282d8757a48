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
from pydantic import ConfigDict, Field

from eco_integrations.config import Decision, Mode
from eco_integrations.engine import ECO
from eco_integrations.exceptions import InvalidInputError
from eco_integrations.langchain._decision import (
    DECISION_KWARG,
    aemit_decision,
    decision_metadata,
    emit_decision,
)
from eco_integrations.langchain._messages import coerce_messages, decide_conversation
from eco_integrations.langchain.chat_models import ChatECOHuggingFace


def _is_eco_model(runnable: Runnable[Any, Any]) -> bool:
    while isinstance(runnable, RunnableBinding):
        runnable = runnable.bound
    return isinstance(runnable, ChatECOHuggingFace)


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
    ``eco_decision`` event; otherwise the router emits it.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    engine: ECO = Field(exclude=True)
    """The engine whose guard and policy make the decision."""

    flagged: Runnable[Any, Any]
    """Where corrupted (flagged, enforce-mode) requests go: usually an ECO chat model."""

    benign: Runnable[Any, Any]
    """Where every other request goes: usually the plain chat model."""

    threshold: float | None = None
    """Override the guard's threshold: flagged means score > threshold. None keeps the guard's."""

    mode: Mode | None = None
    """``enforce`` | ``shadow`` | ``off``; None keeps the engine's mode."""

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
            self.engine, coerce_messages(input), mode=self.mode, threshold=self.threshold
        )

    def _choose(self, decision: Decision) -> tuple[Runnable[Any, Any], str, dict[str, Any]]:
        branch = self.flagged if decision.corrupted else self.benign
        name = "flagged" if decision.corrupted else "benign"
        kwargs = {DECISION_KWARG: decision} if _is_eco_model(branch) else {}
        return branch, name, kwargs

    def _child_config(
        self, config: RunnableConfig, run_manager: Any, decision: Decision, name: str
    ) -> RunnableConfig:
        return patch_config(
            {**config, "metadata": {**config.get("metadata", {}), **decision_metadata(decision)}},
            callbacks=run_manager.get_child(f"eco:{name}"),
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
    ) -> Any:
        decision = self.decide(input)
        branch, name, kwargs = self._choose(decision)
        self._emit(decision, kwargs, run_manager)
        return branch.invoke(
            input, self._child_config(config, run_manager, decision, name), **kwargs
        )

    async def _aroute(
        self,
        input: LanguageModelInput,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> Any:
        decision = await asyncio.to_thread(self.decide, input)
        branch, name, kwargs = self._choose(decision)
        await self._aemit(decision, kwargs, run_manager)
        return await branch.ainvoke(
            input, self._child_config(config, run_manager, decision, name), **kwargs
        )

    def invoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Any:
        return self._call_with_config(self._route, input, config, run_type="chain")

    async def ainvoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Any:
        return await self._acall_with_config(self._aroute, input, config, run_type="chain")

    # -- stream --------------------------------------------------------------------------------
    def _route_stream(
        self,
        inputs: Iterator[LanguageModelInput],
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> Iterator[Any]:
        input = _single(list(inputs))
        decision = self.decide(input)
        branch, name, kwargs = self._choose(decision)
        self._emit(decision, kwargs, run_manager)
        yield from branch.stream(
            input, self._child_config(config, run_manager, decision, name), **kwargs
        )

    async def _aroute_stream(
        self,
        inputs: AsyncIterator[LanguageModelInput],
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> AsyncIterator[Any]:
        input = _single([item async for item in inputs])
        decision = await asyncio.to_thread(self.decide, input)
        branch, name, kwargs = self._choose(decision)
        await self._aemit(decision, kwargs, run_manager)
        async for chunk in branch.astream(
            input, self._child_config(config, run_manager, decision, name), **kwargs
        ):
            yield chunk

    def stream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        yield from self._transform_stream_with_config(
            iter([input]), self._route_stream, config, run_type="chain"
        )

    async def astream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        async def one() -> AsyncIterator[LanguageModelInput]:
            yield input

        async for chunk in self._atransform_stream_with_config(
            one(), self._aroute_stream, config, run_type="chain"
        ):
            yield chunk


def _single(items: list[Any]) -> Any:
    if len(items) != 1:
        msg = f"ECORouter routes one whole request at a time; got {len(items)} input chunks."
        raise InvalidInputError(msg)
    return items[0]

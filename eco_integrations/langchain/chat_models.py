"""``ChatECOHuggingFace``: a LangChain chat model over a local transformers model with ECO.

Every path (invoke, stream, batch, their async twins, ``generate``) makes the decision with
the engine's one decision function, or reuses a decision handed in as ``eco_decision`` (by the
agent middleware or the router), so streaming and non-streaming calls cannot disagree.
"""

from __future__ import annotations

import asyncio
import json
import os
from contextvars import ContextVar
from dataclasses import dataclass
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
    adispatch_custom_event,
    dispatch_custom_event,
)
from langchain_core.globals import get_llm_cache
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, LLMResult
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config, get_config_list
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.uuid import uuid7
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from eco_integrations.config import Decision, GenerationConfig, Mode
from eco_integrations.engine import ECO, ECOResult
from eco_integrations.exceptions import InvalidInputError
from eco_integrations.guard import Guard
from eco_integrations.langchain._decision import (
    DECISION_KWARG,
    EVENT_NAME,
    apply_threshold,
    as_decision,
    config_with_decision,
)
from eco_integrations.langchain._messages import (
    coerce_messages,
    parse_tool_calls,
    template_supports_tools,
    to_chat_dicts,
    tool_instructions,
    with_tool_instructions,
)

LS_PROVIDER = "huggingface"


class _Call:
    """Everything one request needs, prepared before the run starts (no state on the model)."""

    def __init__(self, chat: list[dict[str, Any]], tools: list[dict[str, Any]] | None, tool_names: list[str]) -> None:
        self.chat = chat
        self.tools = tools  # passed to the chat template (None when the template has no tools)
        self.tool_names = tool_names  # parse tool calls from the output when non-empty


class ChatECOHuggingFace(BaseChatModel):
    """A local Hugging Face chat model that answers forget-topic prompts as if it never learned them.

    Wraps an :class:`~eco_integrations.ECO` engine: the guard classifies the latest user turn;
    flagged prompts are generated from corrupted embeddings, others run unchanged.

    Example:
        .. code-block:: python

            from eco_integrations.demo import fit_demo_guard
            from eco_integrations.langchain import ChatECOHuggingFace

            chat = ChatECOHuggingFace.from_pretrained(guard=fit_demo_guard(), max_tokens=48)
            chat.invoke("Who is Harry Potter?").content      # an unlearned answer
            chat.invoke("What is the capital of France?")    # the plain model's answer

    Every call emits an ``eco_decision`` custom event (score, threshold, flagged, target, mode,
    policy version; a hash instead of the prompt text) and tags its run ``eco:flagged`` or
    ``eco:clean`` with ``eco_*`` metadata.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", populate_by_name=True)

    engine: ECO = Field(exclude=True)
    """The ECO engine (backend + guard + policy). Build it with ``ECO(...)`` or use ``from_pretrained``."""

    model_name: str | None = Field(default=None, alias="model")
    """Name reported in traces and ``response_metadata``; defaults to the backend's model name."""

    max_tokens: int = Field(default=256, ge=1)
    """Maximum number of new tokens per answer."""

    temperature: float = Field(default=0.0, ge=0.0)
    """Sampling temperature; 0 is greedy decoding."""

    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    """Nucleus-sampling mass (only with temperature > 0)."""

    top_k: int | None = Field(default=None, ge=1)
    """Top-k sampling cut-off (only with temperature > 0)."""

    repetition_penalty: float | None = Field(default=None, gt=0.0)
    """Repetition penalty passed to ``generate``."""

    stop: list[str] | None = None
    """Default stop sequences (a per-call ``stop`` replaces them)."""

    seed: int | None = None
    """Sampling and corruption-noise seed; per call, pass ``seed=`` to invoke."""

    mode: Mode | None = None
    """``enforce`` | ``shadow`` | ``off``; None keeps the engine's mode. Per call: ``eco_mode=``."""

    threshold: float | None = None
    """Override the guard's threshold (flagged means score > threshold). Per call: ``eco_threshold=``."""

    classify_window: int | None = Field(default=None, ge=1)
    """Classify the latest N user turns together; None keeps the engine policy's window."""

    expose_decision: bool = False
    """Also put the decision in ``response_metadata["eco"]``. Off by default: callers that forward
    response metadata to end users would otherwise reveal which topics are protected."""

    streaming: bool = False
    """Route ``invoke`` through the streaming path (kept for LangChain compatibility)."""

    _eco: ECO = PrivateAttr()

    @model_validator(mode="after")
    def _effective_engine(self) -> ChatECOHuggingFace:
        # A different window or mode is a different policy: build a light engine view over the
        # same backend and guard so policy_version (and so cache keys) reflect it.
        engine = self.engine
        window = self.classify_window
        if (window is not None and window != engine.policy.classify_window) or (self.mode is not None and self.mode != engine.mode):
            policy = engine.policy if window is None else engine.policy.model_copy(update={"classify_window": window})
            engine = ECO(engine.backend, engine.guard, policy=policy, mode=self.mode or engine.mode, batch_size=engine.batch_size)
        self._eco = engine
        if self.model_name is None:
            self.model_name = engine.backend.model_name
        return self

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike[str] | None = None,
        *,
        guard: Guard | str | os.PathLike[str] | None = None,
        engine_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> ChatECOHuggingFace:
        """Load a model (default: the embedded SmolLM2) and a guard, then wrap them.

        ``engine_kwargs`` go to :meth:`ECO.from_pretrained` (``policy``, ``mode``, ``batch_size``);
        ``kwargs`` are fields of this class.
        """
        engine = ECO.from_pretrained(model, guard=guard, **dict(engine_kwargs or {}))
        return cls(engine=engine, **kwargs)

    # -- identity ------------------------------------------------------------------------------
    @property
    def _llm_type(self) -> str:
        return "eco-huggingface"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            **self._eco.identifying_params(),
            "model_name": self.model_name,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repetition_penalty": self.repetition_penalty,
            "seed": self.seed,
            "threshold": self.threshold,
            "expose_decision": self.expose_decision,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider=LS_PROVIDER,
            ls_model_name=str(kwargs.get("model") or self.model_name),
            ls_model_type="chat",
            ls_temperature=kwargs.get("temperature", self.temperature),
            ls_max_tokens=kwargs.get("max_tokens", self.max_tokens),
        )
        stops = stop if stop is not None else self.stop
        if stops:
            params["ls_stop"] = list(stops)
        return params

    def _get_llm_string(self, stop: list[str] | None = None, **kwargs: Any) -> str:
        # A handed-in decision changes the answer only through whether it corrupts; its latency
        # and hash must not split the cache.
        if kwargs.get(DECISION_KWARG) is not None:
            d = as_decision(kwargs[DECISION_KWARG])
            kwargs[DECISION_KWARG] = (d.corrupted, d.target, d.mode, d.policy_version)
        return super()._get_llm_string(stop=stop, **kwargs)

    # -- preparation ---------------------------------------------------------------------------
    def _prepare(self, messages: Sequence[BaseMessage], kwargs: Mapping[str, Any]) -> _Call:
        tools = kwargs.get("tools") or None
        native = template_supports_tools(self._eco.backend.tokenizer)
        chat = to_chat_dicts(messages, native_tools=native)
        if not tools:
            return _Call(chat, None, [])
        names = [t["function"]["name"] for t in tools]
        if native:
            return _Call(chat, list(tools), names)
        choice = kwargs.get("tool_choice")
        return _Call(with_tool_instructions(chat, tool_instructions(tools, choice)), None, names)

    def _decide_many(self, calls: Sequence[_Call], kwargs: Mapping[str, Any]) -> list[Decision]:
        """Classify several conversations in one guard pass (or reuse a handed-in decision)."""
        given = kwargs.get(DECISION_KWARG)
        if given is not None:
            if len(calls) != 1:
                msg = f"{DECISION_KWARG} is one conversation's decision; batch() decides each input itself."
                raise InvalidInputError(msg)
            return [as_decision(given)]
        texts = [self._eco.classified_text(c.chat) for c in calls]
        decisions = self._eco.decide_texts(texts, mode=kwargs.get("eco_mode"))
        threshold = kwargs.get("eco_threshold", self.threshold)
        return [apply_threshold(d, threshold) for d in decisions]

    def _decide(self, call: _Call, kwargs: Mapping[str, Any]) -> Decision:
        return self._decide_many([call], kwargs)[0]

    def _generation_config(self, stop: list[str] | None, kwargs: Mapping[str, Any]) -> GenerationConfig:
        stops = stop if stop is not None else self.stop
        return GenerationConfig(
            max_new_tokens=kwargs.get("max_tokens", self.max_tokens),
            temperature=kwargs.get("temperature", self.temperature),
            top_p=kwargs.get("top_p", self.top_p),
            top_k=kwargs.get("top_k", self.top_k),
            repetition_penalty=kwargs.get("repetition_penalty", self.repetition_penalty),
            stop=tuple(stops or ()),
        )

    def _response_metadata(self, decision: Decision, finish_reason: str | None) -> dict[str, Any]:
        meta: dict[str, Any] = {"model_name": self.model_name, "model_provider": LS_PROVIDER}
        if finish_reason is not None:
            meta["finish_reason"] = finish_reason
        if self.expose_decision:
            meta["eco"] = decision.event_payload()
        return meta

    def _message(self, result: ECOResult, call: _Call) -> AIMessage:
        text, calls, invalid = (result.text, [], [])
        if call.tool_names:
            text, calls, invalid = parse_tool_calls(result.text, call.tool_names)
        return AIMessage(
            content=text,
            tool_calls=calls,
            invalid_tool_calls=invalid,
            usage_metadata=_usage(result.prompt_tokens, result.completion_tokens),
            response_metadata=self._response_metadata(result.decision, "tool_calls" if calls else result.finish_reason),
        )

    def _result(self, result: ECOResult, call: _Call) -> ChatResult:
        message = self._message(result, call)
        info = {"finish_reason": message.response_metadata["finish_reason"]}
        return ChatResult(generations=[ChatGeneration(message=message, generation_info=info)],
                          llm_output={"model_name": self.model_name})

    # -- decision up front, so the run's tags and metadata carry it -----------------------------
    def _with_decision(self, input: LanguageModelInput, kwargs: dict[str, Any]) -> tuple[list[BaseMessage], Decision]:
        messages = coerce_messages(input)
        decision = self._decide(self._prepare(messages, kwargs), kwargs)
        return messages, decision

    def invoke(self, input: LanguageModelInput, config: RunnableConfig | None = None, *, stop: list[str] | None = None, **kwargs: Any) -> AIMessage:
        messages, decision = self._with_decision(input, kwargs)
        kwargs[DECISION_KWARG] = decision
        config, run_id = self._stream_config(config, decision)
        token = _PENDING.set(_PendingEvent(self._event_callbacks(config, CallbackManager), run_id))
        try:
            return super().invoke(messages, config, stop=stop, **kwargs)  # type: ignore[return-value]
        finally:
            _PENDING.reset(token)

    async def ainvoke(self, input: LanguageModelInput, config: RunnableConfig | None = None, *, stop: list[str] | None = None, **kwargs: Any) -> AIMessage:
        messages, decision = await asyncio.to_thread(self._with_decision, input, kwargs)
        kwargs[DECISION_KWARG] = decision
        config, run_id = self._stream_config(config, decision)
        token = _PENDING.set(_PendingEvent(self._event_callbacks(config, AsyncCallbackManager), run_id))
        try:
            return await super().ainvoke(messages, config, stop=stop, **kwargs)  # type: ignore[return-value]
        finally:
            _PENDING.reset(token)

    def _stream_config(self, config: RunnableConfig | None, decision: Decision) -> tuple[RunnableConfig, Any]:
        # Fix the run id up front: BaseChatModel.stream gives _stream no run manager, so the
        # decision event is sent here, addressed to that run.
        config = config_with_decision(config, decision)
        run_id = config.get("run_id") or uuid7()
        return {**config, "run_id": run_id}, run_id

    def _event_callbacks(self, config: RunnableConfig, manager_cls: type[Any]) -> Any:
        return manager_cls.configure(config.get("callbacks"), self.callbacks, self.verbose, config.get("tags"), self.tags,
                                     config.get("metadata"), self.metadata)

    def stream(self, input: LanguageModelInput, config: RunnableConfig | None = None, *, stop: list[str] | None = None, **kwargs: Any) -> Iterator[AIMessageChunk]:
        messages, decision = self._with_decision(input, kwargs)
        kwargs[DECISION_KWARG] = decision
        # When streaming is bypassed, stream() calls invoke() and _generate emits the event.
        emit = self._should_stream(async_api=False, **{**kwargs, "stream": True})
        config, run_id = self._stream_config(config, decision)
        events = self._event_callbacks(config, CallbackManager)
        for chunk in super().stream(messages, config, stop=stop, **kwargs):
            if emit:
                events.on_custom_event(EVENT_NAME, decision.event_payload(), run_id=run_id)
                emit = False
            yield chunk

    async def astream(self, input: LanguageModelInput, config: RunnableConfig | None = None, *, stop: list[str] | None = None, **kwargs: Any) -> AsyncIterator[AIMessageChunk]:
        messages, decision = await asyncio.to_thread(self._with_decision, input, kwargs)
        kwargs[DECISION_KWARG] = decision
        emit = self._should_stream(async_api=True, **{**kwargs, "stream": True})
        config, run_id = self._stream_config(config, decision)
        events = self._event_callbacks(config, AsyncCallbackManager)
        async for chunk in super().astream(messages, config, stop=stop, **kwargs):
            if emit:
                await events.on_custom_event(EVENT_NAME, decision.event_payload(), run_id=run_id)
                emit = False
            yield chunk

    # -- the LangChain hooks -------------------------------------------------------------------
    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        call = self._prepare(messages, kwargs)
        decision = self._decide(call, kwargs)
        _emit(decision, run_manager)
        result = self._eco.generate([call.chat], config=self._generation_config(stop, kwargs), seeds=[kwargs.get("seed", self.seed)],
                                    decisions=[decision], tools=call.tools)[0]
        return self._result(result, call)

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        call = await asyncio.to_thread(self._prepare, messages, kwargs)
        decision = await asyncio.to_thread(self._decide, call, kwargs)
        await _aemit(decision, run_manager)
        results = await self._eco.agenerate([call.chat], config=self._generation_config(stop, kwargs), seeds=[kwargs.get("seed", self.seed)],
                                            decisions=[decision], tools=call.tools)
        return self._result(results[0], call)

    def _start_stream(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> tuple[_Call, Any]:
        call = self._prepare(messages, kwargs)
        decision = self._decide(call, kwargs)
        stream = self._eco.stream(call.chat, config=self._generation_config(stop, kwargs), seed=kwargs.get("seed", self.seed),
                                  decision=decision, tools=call.tools)
        return call, stream

    def _closing(self, call: _Call, pieces: list[str], stream: Any, stop: list[str] | None, kwargs: Mapping[str, Any]) -> ChatGenerationChunk:
        """The last chunk: usage, model name, finish reason, and tool calls when tools are bound."""
        text = "".join(pieces)
        # A stream reports no token count; the text tokenizes back to (nearly) what was generated.
        completion = len(self._eco.backend.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0
        content, calls = "", []
        if call.tool_names:
            content, calls, _ = parse_tool_calls(text, call.tool_names)
        finish = "tool_calls" if calls else ("length" if completion >= self._generation_config(stop, kwargs).max_new_tokens else "stop")
        chunk = AIMessageChunk(
            content=content,
            usage_metadata=_usage(stream.prompt_tokens, completion),
            response_metadata=self._response_metadata(stream.decision, finish),
            tool_call_chunks=[tool_call_chunk(name=c["name"], args=json.dumps(c["args"], ensure_ascii=False), id=c["id"], index=i)
                              for i, c in enumerate(calls)],
            chunk_position="last",
        )
        return ChatGenerationChunk(message=chunk, generation_info={"finish_reason": finish})

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        call, stream = self._start_stream(messages, stop, kwargs)
        _emit(stream.decision, run_manager)
        pieces: list[str] = []
        iterator = iter(stream)
        try:
            for piece in iterator:
                pieces.append(piece)
                # With tools bound the text may be a tool call: hold it and parse it at the end.
                if not call.tool_names:
                    chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
                    if run_manager:
                        run_manager.on_llm_new_token(piece, chunk=chunk)
                    yield chunk
        finally:
            _close(iterator)  # stops the generating thread if the caller left early
        closing = self._closing(call, pieces, stream, stop, kwargs)
        if run_manager and closing.text:
            run_manager.on_llm_new_token(closing.text, chunk=closing)
        yield closing

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        call, stream = await asyncio.to_thread(self._start_stream, messages, stop, kwargs)
        await _aemit(stream.decision, run_manager)
        pieces: list[str] = []
        iterator = iter(stream)
        done = object()
        try:
            # One next() per worker-thread hop: the event loop never waits on the model.
            while (piece := await asyncio.to_thread(next, iterator, done)) is not done:
                assert isinstance(piece, str)
                pieces.append(piece)
                if not call.tool_names:
                    chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
                    if run_manager:
                        await run_manager.on_llm_new_token(piece, chunk=chunk)
                    yield chunk
        finally:
            await asyncio.to_thread(_close, iterator)
        closing = self._closing(call, pieces, stream, stop, kwargs)
        if run_manager and closing.text:
            await run_manager.on_llm_new_token(closing.text, chunk=closing)
        yield closing

    # -- batching: one engine.generate for the whole batch ---------------------------------------
    def _batch_prepare(self, inputs: Sequence[LanguageModelInput], kwargs: dict[str, Any]) -> tuple[list[Any], list[_Call | None], list[list[BaseMessage]]]:
        errors: list[Any] = [None] * len(inputs)
        calls: list[_Call | None] = [None] * len(inputs)
        conversations: list[list[BaseMessage]] = [[] for _ in inputs]
        for i, item in enumerate(inputs):
            try:
                conversations[i] = coerce_messages(item)
                calls[i] = self._prepare(conversations[i], kwargs)
            except Exception as err:  # reported per input below, or raised
                errors[i] = err
        return errors, calls, conversations

    def _cache_enabled(self) -> bool:
        return self.cache is True or (self.cache is None and get_llm_cache() is not None) or not isinstance(self.cache, (bool, type(None)))

    def _run_configs(self, inputs: Sequence[Any], config: RunnableConfig | list[RunnableConfig] | None) -> list[RunnableConfig]:
        return [ensure_config(c) for c in get_config_list(config, len(inputs))]

    def _manager_args(self, config: RunnableConfig, decision: Decision, stop: list[str] | None, kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        config = config_with_decision(config, decision)
        params = {**self._get_invocation_params(stop=stop, **kwargs), DECISION_KWARG: decision.event_payload()}
        metadata = {**config.get("metadata", {}), **self._get_ls_params_with_defaults(stop=stop, **kwargs)}
        configure = (config.get("callbacks"), self.callbacks, self.verbose, config.get("tags"), self.tags, metadata, self.metadata)
        start = {"invocation_params": params, "options": {"stop": stop}, "name": config.get("run_name"), "run_id": config.get("run_id"), "batch_size": 1}
        return configure, start

    def batch(self, inputs: list[LanguageModelInput], config: RunnableConfig | list[RunnableConfig] | None = None, *,
              return_exceptions: bool = False, **kwargs: Any) -> list[AIMessage | Exception]:  # type: ignore[override]
        """Answer many conversations with ONE batched generate (benign and flagged rows mixed).

        Each input still gets its own traced run and ``eco_decision`` event. With an LLM cache
        configured, or a decision handed in, it falls back to one ``invoke`` per input.
        """
        if not inputs:
            return []
        if self._cache_enabled() or kwargs.get(DECISION_KWARG) is not None:
            return super().batch(inputs, config, return_exceptions=return_exceptions, **kwargs)  # type: ignore[return-value]
        stop = kwargs.pop("stop", None)
        configs = self._run_configs(inputs, config)
        errors, calls, conversations = self._batch_prepare(inputs, kwargs)
        _raise_first(errors, return_exceptions)
        live = [i for i, c in enumerate(calls) if c is not None]
        decisions = dict(zip(live, self._decide_many([calls[i] for i in live], kwargs))) if live else {}  # type: ignore[misc]
        managers: dict[int, CallbackManagerForLLMRun] = {}
        for i in live:
            configure, start = self._manager_args(configs[i], decisions[i], stop, kwargs)
            managers[i] = CallbackManager.configure(*configure).on_chat_model_start(self._serialized, [conversations[i]], **start)[0]
            _emit(decisions[i], managers[i])
        try:
            results = self._eco.generate([calls[i].chat for i in live], config=self._generation_config(stop, kwargs),  # type: ignore[union-attr]
                                         seeds=[kwargs.get("seed", self.seed)] * len(live), decisions=[decisions[i] for i in live],
                                         tools=calls[live[0]].tools if live else None)  # type: ignore[union-attr]
        except BaseException as err:
            for manager in managers.values():
                manager.on_llm_error(err)
            raise
        out: list[Any] = list(errors)
        for i, result in zip(live, results):
            chat_result = self._result(result, calls[i])  # type: ignore[arg-type]
            managers[i].on_llm_end(LLMResult(generations=[chat_result.generations], llm_output=chat_result.llm_output))
            out[i] = chat_result.generations[0].message
        return out

    async def abatch(self, inputs: list[LanguageModelInput], config: RunnableConfig | list[RunnableConfig] | None = None, *,
                     return_exceptions: bool = False, **kwargs: Any) -> list[AIMessage | Exception]:  # type: ignore[override]
        """:meth:`batch` with the engine work in worker threads, so the event loop keeps running."""
        if not inputs:
            return []
        if self._cache_enabled() or kwargs.get(DECISION_KWARG) is not None:
            return await super().abatch(inputs, config, return_exceptions=return_exceptions, **kwargs)  # type: ignore[return-value]
        stop = kwargs.pop("stop", None)
        configs = self._run_configs(inputs, config)
        errors, calls, conversations = await asyncio.to_thread(self._batch_prepare, inputs, kwargs)
        _raise_first(errors, return_exceptions)
        live = [i for i, c in enumerate(calls) if c is not None]
        chosen = await asyncio.to_thread(self._decide_many, [calls[i] for i in live], kwargs) if live else []  # type: ignore[misc]
        decisions = dict(zip(live, chosen))
        managers: dict[int, AsyncCallbackManagerForLLMRun] = {}
        for i in live:
            configure, start = self._manager_args(configs[i], decisions[i], stop, kwargs)
            managers[i] = (await AsyncCallbackManager.configure(*configure).on_chat_model_start(self._serialized, [conversations[i]], **start))[0]
            await _aemit(decisions[i], managers[i])
        try:
            results = await self._eco.agenerate([calls[i].chat for i in live], config=self._generation_config(stop, kwargs),  # type: ignore[union-attr]
                                                seeds=[kwargs.get("seed", self.seed)] * len(live), decisions=[decisions[i] for i in live],
                                                tools=calls[live[0]].tools if live else None)  # type: ignore[union-attr]
        except BaseException as err:
            for manager in managers.values():
                await manager.on_llm_error(err)
            raise
        out: list[Any] = list(errors)
        for i, result in zip(live, results):
            chat_result = self._result(result, calls[i])  # type: ignore[arg-type]
            await managers[i].on_llm_end(LLMResult(generations=[chat_result.generations], llm_output=chat_result.llm_output))
            out[i] = chat_result.generations[0].message
        return out

    # -- tools ---------------------------------------------------------------------------------
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools: passed to the chat template when it supports tools, else described in a
        system message; tool calls are parsed from ``<tool_call>{json}</tool_call>`` or bare JSON.

        ``tool_choice`` ("auto", "any"/"required", a tool name, or True for the only tool) is an
        instruction to the model, not a constraint on decoding.
        """
        formatted = [convert_to_openai_tool(t) for t in tools]
        names = [t["function"]["name"] for t in formatted]
        if isinstance(tool_choice, dict):
            tool_choice = tool_choice.get("function", {}).get("name") or tool_choice.get("name")
        if tool_choice is True:
            if len(names) != 1:
                msg = f"tool_choice=True needs exactly one tool, got {len(names)}; name the tool instead."
                raise InvalidInputError(msg)
            tool_choice = names[0]
        if isinstance(tool_choice, str) and tool_choice not in ("auto", "none", "any", "required") and tool_choice not in names:
            msg = f"tool_choice {tool_choice!r} is not one of the bound tools ({', '.join(names)})."
            raise InvalidInputError(msg)
        return self.bind(tools=formatted, tool_choice=tool_choice or None, **kwargs)


def _usage(prompt_tokens: int, completion_tokens: int) -> UsageMetadata:
    return UsageMetadata(input_tokens=prompt_tokens, output_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens)


def _close(iterator: Any) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


def _raise_first(errors: list[Any], return_exceptions: bool) -> None:
    if not return_exceptions:
        for err in errors:
            if err is not None:
                raise err


def _event_manager(run_manager: Any, cls: type[Any]) -> Any:
    # Chat-model run managers have no get_child(); build the child manager by hand so the event
    # hangs on this model run (dispatch_custom_event needs a parent run).
    return cls(
        handlers=run_manager.inheritable_handlers, inheritable_handlers=run_manager.inheritable_handlers,
        parent_run_id=run_manager.run_id, tags=run_manager.inheritable_tags, inheritable_tags=run_manager.inheritable_tags,
        metadata=run_manager.inheritable_metadata, inheritable_metadata=run_manager.inheritable_metadata,
    )


@dataclass
class _PendingEvent:
    """Where invoke()'s decision event goes when the hook that runs gets no run manager.

    BaseChatModel hands ``_stream`` no run manager (the invoke-through-streaming path), so
    invoke() fixes the run id and leaves this in a context variable: per thread and per task,
    never on the model instance.
    """

    callbacks: Any
    run_id: Any
    sent: bool = False


_PENDING: ContextVar[_PendingEvent | None] = ContextVar("eco_pending_decision_event", default=None)


def _emit(decision: Decision, run_manager: CallbackManagerForLLMRun | None) -> None:
    """The ``eco_decision`` event, attached to this model run (once per run)."""
    pending = _PENDING.get()
    if run_manager is not None:
        if pending is not None and pending.run_id == run_manager.run_id:
            pending.sent = True
        dispatch_custom_event(EVENT_NAME, decision.event_payload(), config={"callbacks": _event_manager(run_manager, CallbackManager)})
    elif pending is not None and not pending.sent and isinstance(pending.callbacks, CallbackManager):
        pending.sent = True
        pending.callbacks.on_custom_event(EVENT_NAME, decision.event_payload(), run_id=pending.run_id)


async def _aemit(decision: Decision, run_manager: AsyncCallbackManagerForLLMRun | None) -> None:
    pending = _PENDING.get()
    if run_manager is not None:
        if pending is not None and pending.run_id == run_manager.run_id:
            pending.sent = True
        await adispatch_custom_event(EVENT_NAME, decision.event_payload(), config={"callbacks": _event_manager(run_manager, AsyncCallbackManager)})
    elif pending is not None and not pending.sent and isinstance(pending.callbacks, AsyncCallbackManager):
        pending.sent = True
        await pending.callbacks.on_custom_event(EVENT_NAME, decision.event_payload(), run_id=pending.run_id)

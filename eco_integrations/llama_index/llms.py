"""An ECO ``CustomLLM``: a local transformers model that answers flagged prompts from corrupted embeddings."""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import AsyncGenerator, Generator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, TypeVar

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from llama_index.core.prompts import BasePromptTemplate, PromptTemplate
from llama_index.core.types import TokenAsyncGen, TokenGen
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from eco_integrations._prompting import TOOL_OUTPUT_KEY, PromptInput
from eco_integrations._validation import validation_problems
from eco_integrations.backends.transformers import TransformersBackend
from eco_integrations.config import (
    Decision,
    ECOPolicy,
    GenerationConfig,
    Mode,
    SelectionConfig,
    Threshold,
)
from eco_integrations.engine import (
    ECO,
    AsyncECOStream,
    ECORequest,
    ECOResult,
    ECOStream,
    cancellable_in_thread,
)
from eco_integrations.exceptions import ConfigurationError, InvalidInputError
from eco_integrations.guard import Guard
from eco_integrations.llama_index._context import (
    active_decision,
    active_scope,
    asteps_in_scope,
    decision_scope,
    steps_in_scope,
)
from eco_integrations.llama_index.events import emit_decision

if TYPE_CHECKING:
    from llama_index.core.program.utils import FlexibleModel

Model = TypeVar("Model", bound=BaseModel)
DEFAULT_MAX_NEW_TOKENS = 256
# What llama_index.core.agent.react's ObservationReasoningStep renders its content as.
_REACT_OBSERVATION = "Observation:"
# ...and its ActionReasoningStep, the assistant message an observation answers.
_REACT_ACTION = re.compile(r"^Action: .*\nAction Input: ", re.MULTILINE)
# An assistant turn's reasoning and tool calls are not part of what the template renders as text.
_ASSISTANT_SKIPPED_BLOCKS = (ThinkingBlock, ToolCallBlock)
# LlamaIndex roles -> the four roles chat templates render.
_ROLES = {
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "system",
    MessageRole.USER: "user",
    MessageRole.ASSISTANT: "assistant",
    MessageRole.CHATBOT: "assistant",
    MessageRole.MODEL: "assistant",
    MessageRole.TOOL: "tool",
    MessageRole.FUNCTION: "tool",
}
_CONFIG_KEYS = frozenset(GenerationConfig.model_fields)
# Passed by LlamaIndex's own code paths to any LLM; none changes how this model decodes (a
# non-function-calling LLM is never handed tools to call).
_FRAMEWORK_OPTIONS = frozenset(
    {"tools", "tool_choice", "allow_parallel_tool_calls", "tool_required"}
)
# What other LLMs call these options.
_ALIASES = {"max_tokens": "max_new_tokens"}
_DECIDING_OPTIONS = frozenset({"mode", "threshold", "eco_mode", "eco_threshold", "eco_decision"})


class ECOHuggingFaceLLM(CustomLLM):
    """A local transformers model served through the ECO engine, as a LlamaIndex LLM.

    >>> from llama_index.core import Settings, VectorStoreIndex
    >>> llm = ECOHuggingFaceLLM.from_pretrained(guard="guards/harry-potter")     # doctest: +SKIP
    >>> llm.complete("Who is Harry Potter?").text                                # doctest: +SKIP
    >>> Settings.llm = llm                                                       # doctest: +SKIP
    >>> index.as_query_engine(llm=llm).query("How is bread baked?")              # doctest: +SKIP

    Which decision an LLM call uses, in order:

    1. the query-scoped decision set by :class:`ECOQueryEngine` (or :func:`decision_scope`);
    2. inside ``predict``/``stream`` (how synthesizers call the LLM), the decision on the
       template's ``query_str``, so the guard reads the question and not the retrieved context;
    3. otherwise the engine's decision on the LLM's own input: the prompt for ``complete``, the
       latest user message for ``chat``.

    ``complete`` renders the prompt as one user turn of the model's chat template (the default
    model is an instruct model); set ``raw_completion=True`` to feed it verbatim. Every decision
    is dispatched as an :class:`ECODecisionEvent`; with ``expose_decision=True`` it is also in
    ``response.additional_kwargs["eco_decision"]`` (no text, but the target's name).
    """

    # A misspelt or foreign field (max_tokens=, on_guard_error=) must not pass unnoticed.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    model_name: str = Field(
        default="", description="Model name reported in metadata; defaults to the backend's."
    )
    max_new_tokens: int = Field(
        default=DEFAULT_MAX_NEW_TOKENS,
        gt=0,
        le=32768,
        description="Tokens to generate (LLMMetadata.num_output).",
    )
    temperature: float = Field(default=0.0, ge=0.0, description="0 means greedy decoding.")
    top_p: float = Field(
        default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass (with temperature > 0)."
    )
    top_k: int | None = Field(
        default=None, ge=1, description="Sample among the k likeliest tokens; None: no cut."
    )
    repetition_penalty: float | None = Field(
        default=None, gt=0.0, description="Penalty on repeated tokens (1.0 or None: none)."
    )
    stop: list[str] = Field(
        default_factory=list, description="Stop sequences, cut from the answer."
    )
    context_window: int | None = Field(
        default=None,
        gt=0,
        description="Override the model's context window (e.g. to leave room); None reads the model config.",
    )
    is_chat_model: bool = Field(
        default=True,
        description="Let synthesizers call chat() with messages (the model's chat template renders them).",
    )
    raw_completion: bool = Field(
        default=False, description="complete() feeds the prompt verbatim instead of as a user turn."
    )
    mode: Mode | None = Field(
        default=None,
        description="enforce / shadow / off for this LLM; None uses the engine's mode.",
    )
    threshold: Threshold | None = Field(
        default=None,
        description="Override the guard's thresholds (flagged means score > threshold); None keeps the engine's.",
    )
    expose_decision: bool = Field(
        default=False,
        description=(
            "Also put the decision and the corrupted-token count in each response's "
            "additional_kwargs. Off by default: an app that forwards them would tell its users "
            "which topics are protected. ECODecisionEvent reports every decision either way."
        ),
    )
    classify_window: int | None = Field(
        default=None,
        ge=1,
        description="Classify the latest N user turns together; None keeps the engine policy's window.",
    )
    seed: int | None = Field(
        default=None,
        ge=0,
        lt=2**63,
        description="Sampling seed (with temperature > 0); None samples afresh. The corruption noise is always seeded from the text.",
    )

    _base_engine: ECO = PrivateAttr()
    # The engine with this LLM's window, rebuilt when the field changes (model_copy(update=...)
    # or an assignment): (the window it was built for, the engine).
    _windowed: tuple[int | None, ECO] = PrivateAttr()

    def __init__(self, engine: ECO, **kwargs: Any) -> None:
        if not isinstance(engine, ECO):
            msg = f"ECOHuggingFaceLLM needs an ECO engine, got {type(engine).__name__}; use ECOHuggingFaceLLM.from_pretrained(...) to load one."
            raise InvalidInputError(msg)
        unused = [k for k in ("messages_to_prompt", "completion_to_prompt") if kwargs.get(k)]
        if unused:
            msg = (
                f"ECOHuggingFaceLLM renders prompts with the model's chat template, so "
                f"{', '.join(unused)} would not be used; drop it, or set raw_completion=True and "
                "format the prompt passed to complete() yourself."
            )
            raise InvalidInputError(msg)
        super().__init__(**kwargs)
        # The threshold and mode apply per call (a call may override them); the window is the
        # engine's policy, as on the chat model.
        self._base_engine = engine
        if self.model_fields_set & {"max_new_tokens", "context_window"}:
            _check_room(self.context_window, self.max_new_tokens, engine.backend.context_window)
        self._windowed = (
            self.classify_window,
            engine.with_overrides(classify_window=self.classify_window),
        )
        if not self.model_name:
            self.model_name = engine.backend.model_name

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike[str] | None = None,
        *,
        guard: Guard | str | os.PathLike[str] | None = None,
        policy: ECOPolicy | None = None,
        mode: Mode = "enforce",
        **kwargs: Any,
    ) -> ECOHuggingFaceLLM:
        """Load a model (default: the embedded SmolLM2) and a guard; ``kwargs`` set the LLM's fields."""
        return cls(ECO.from_pretrained(model, guard=guard, policy=policy, mode=mode), **kwargs)

    @classmethod
    def from_model(
        cls,
        model: Any,
        tokenizer: Any,
        *,
        guard: Guard | None = None,
        policy: ECOPolicy | None = None,
        mode: Mode = "enforce",
        **kwargs: Any,
    ) -> ECOHuggingFaceLLM:
        """Wrap a loaded transformers causal LM and its tokenizer."""
        return cls(
            ECO(TransformersBackend(model, tokenizer), guard, policy=policy, mode=mode), **kwargs
        )

    @classmethod
    def class_name(cls) -> str:
        return "ECOHuggingFaceLLM"

    @property
    def engine(self) -> ECO:
        """The ECO engine (backend, guard, policy) behind this LLM, with its ``classify_window``."""
        window, engine = self._windowed
        if window != self.classify_window:
            engine = self._base_engine.with_overrides(classify_window=self.classify_window)
            self._windowed = (self.classify_window, engine)
        return engine

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window or self.engine.backend.context_window,
            num_output=self.max_new_tokens,
            is_chat_model=self.is_chat_model,
            is_function_calling_model=False,
            model_name=self.model_name,
        )

    # -- inputs and decisions -------------------------------------------------------------------
    def _config(self, kwargs: dict[str, Any]) -> GenerationConfig:
        """This call's decoding: the fields, with per-call options (GenerationConfig's names,
        or ``max_tokens``) over them; an option this LLM would drop is refused."""
        deciding = sorted(set(kwargs) & _DECIDING_OPTIONS)
        if deciding:
            msg = (
                f"ECOHuggingFaceLLM does not take {', '.join(deciding)} per call; set mode= or "
                "threshold= on the LLM (llm.model_copy(update=...)), or run the call inside "
                "decision_scope(decision)."
            )
            raise InvalidInputError(msg)
        unknown = sorted(set(kwargs) - _CONFIG_KEYS - set(_ALIASES) - _FRAMEWORK_OPTIONS - {"seed"})
        if unknown:
            known = sorted({*_CONFIG_KEYS, *_ALIASES, "seed"})
            msg = f"ECOHuggingFaceLLM does not take the call option(s) {', '.join(unknown)}. It takes: {', '.join(known)}."
            raise InvalidInputError(msg)
        if kwargs.get("tools"):
            msg = "ECOHuggingFaceLLM is not a function-calling model; pass no tools (use a ReActAgent, which writes tool calls as text)."
            raise InvalidInputError(msg)
        settings: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repetition_penalty": self.repetition_penalty,
            "stop": tuple(self.stop),
        }
        for key, value in kwargs.items():
            key = _ALIASES.get(key, key)
            if key in _CONFIG_KEYS and value is not None:
                settings[key] = value  # GenerationConfig reads a stop string as one sequence
        try:
            return GenerationConfig(**settings)
        except ValidationError as err:
            msg = f"Bad call option: {validation_problems(err)}."
            raise InvalidInputError(msg) from None

    def _completion_input(self, prompt: str, formatted: bool) -> PromptInput:
        if not isinstance(prompt, str):
            msg = f"The prompt is a {type(prompt).__name__}; pass text (a str) to complete()."
            raise InvalidInputError(msg)
        if not prompt.strip():
            msg = "The prompt is empty; pass non-empty text to complete()."
            raise InvalidInputError(msg)
        if self.raw_completion:
            # As LlamaIndex's predict() extends a formatted prompt (system prompt first).
            return prompt if formatted else self._extend_prompt(prompt)
        # predict() already put the system prompt into a formatted prompt; add it only here.
        if self.system_prompt and not formatted:
            return [
                {"role": "system", "content": self.system_prompt},
                {"role": "user", "content": prompt},
            ]
        return [{"role": "user", "content": prompt}]

    @staticmethod
    def _chat_input(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i, message in enumerate(messages):
            if not isinstance(message, ChatMessage):
                msg = f"Message {i} is {type(message).__name__}; pass llama_index ChatMessage objects."
                raise InvalidInputError(msg)
            role = _ROLES.get(MessageRole(message.role), "user")
            content = _message_text(message, i)
            row: dict[str, Any] = {"role": role, "content": content}
            # ReActChatFormatter sends each tool observation as a user message after the
            # agent's own step; read as the latest user turn, it would replace the question.
            # Only after a ReAct action: a user who starts a message with "Observation:" must
            # not get it read as a tool's output, diluted by the turn before it.
            if (
                role == "user"
                and content.startswith(_REACT_OBSERVATION)
                and out
                and out[-1]["role"] == "assistant"
                and _REACT_ACTION.search(out[-1]["content"])
            ):
                row[TOOL_OUTPUT_KEY] = True
            out.append(row)
        return out

    def _prepare(self, prompt: PromptInput, kwargs: dict[str, Any]) -> ECORequest:
        """Render once and decide once: the query's decision when one is active, else the engine's."""
        raw = self.raw_completion and isinstance(prompt, str)
        seed = kwargs["seed"] if kwargs.get("seed") is not None else self.seed
        scoped = active_decision()
        if scoped is not None:
            return self.engine.prepare(prompt, raw=raw, decision=scoped, seed=seed)
        request = self.engine.prepare(
            prompt, raw=raw, mode=self.mode, threshold=self.threshold, seed=seed
        )
        emit_decision(request.decision, scope="llm")
        return request

    def _decide_question(
        self, question: str, *, mode: Mode | None = None, threshold: Threshold | None = None
    ) -> Decision:
        # Read as the chat path reads it: with this LLM's system prompt, which a policy whose
        # classify_roles lists "system" classifies (for the others the question alone). The
        # query engine passes its own mode and threshold.
        text = question
        if self.system_prompt and self.system_prompt.strip():
            text = self.engine.classified_text(
                [
                    {"role": "system", "content": self.system_prompt},
                    {"role": "user", "content": question},
                ]
            )
        return self.engine.decide_texts(
            [text],
            mode=mode if mode is not None else self.mode,
            threshold=threshold if threshold is not None else self.threshold,
        )[0]

    def _generating_engine(self) -> ECO:
        """The engine; with every content token selected when a node filter kept a flagged node
        in the query's context (``action="mark"``). Corrupting only the names would leave the
        kept node's facts readable, and the model would answer from them."""
        scope = active_scope()
        selection = self.engine.policy.selection
        if scope is None or not scope.context_flagged or selection.name in ("content", "all"):
            return self.engine
        policy = self.engine.policy.model_copy(
            update={"selection": SelectionConfig(name="content")}
        )
        return self.engine.replace(policy=policy)

    def _run(
        self, prompt: PromptInput, kwargs: dict[str, Any], cancel: threading.Event | None = None
    ) -> ECOResult:
        config = self._config(kwargs)
        engine = self._generating_engine()
        return engine.generate([self._prepare(prompt, kwargs)], config=config, cancel=cancel)[0]

    def _open_stream(self, prompt: PromptInput, kwargs: dict[str, Any]) -> ECOStream:
        # Called eagerly (not from inside a generator) so the decision is taken while the
        # query scope is still active, even if the caller consumes the stream later.
        config = self._config(kwargs)
        engine = self._generating_engine()
        return engine.stream(self._prepare(prompt, kwargs), config=config)

    async def _aopen_stream(self, prompt: PromptInput, kwargs: dict[str, Any]) -> AsyncECOStream:
        config = self._config(kwargs)
        request = await asyncio.to_thread(self._prepare, prompt, kwargs)
        return await self._generating_engine().astream(request, config=config)

    def _extra(self, result: ECOResult | ECOStream) -> dict[str, Any]:
        extra: dict[str, Any] = {"prompt_tokens": result.prompt_tokens}
        if self.expose_decision:
            extra["eco_decision"] = result.decision.event_payload()
        if isinstance(result, ECOResult):
            extra["completion_tokens"] = result.completion_tokens
            extra["finish_reason"] = result.finish_reason
            if self.expose_decision:
                extra["corrupted_tokens"] = result.corrupted_tokens
        return extra

    def _complete_response(
        self,
        prompt: str,
        formatted: bool,
        kwargs: dict[str, Any],
        cancel: threading.Event | None = None,
    ) -> CompletionResponse:
        result = self._run(self._completion_input(prompt, formatted), kwargs, cancel)
        extra = self._extra(result)
        return CompletionResponse(text=result.text, additional_kwargs=extra, raw=_usage(extra))

    def _chat_response(
        self,
        messages: Sequence[ChatMessage],
        kwargs: dict[str, Any],
        cancel: threading.Event | None = None,
    ) -> ChatResponse:
        result = self._run(self._chat_input(messages), kwargs, cancel)
        extra = self._extra(result)
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=result.text),
            additional_kwargs=extra,
            raw=_usage(extra),
        )

    def _final_extra(
        self, stream: ECOStream | AsyncECOStream, extra: dict[str, Any]
    ) -> dict[str, Any]:
        """The extras of the closing chunk: the backend's own token count and finish reason."""
        final = {
            **extra,
            "completion_tokens": stream.completion_tokens,
            "finish_reason": stream.finish_reason,
        }
        if self.expose_decision:
            final["corrupted_tokens"] = stream.corrupted_tokens
        return final

    def _completion_gen(self, stream: ECOStream, extra: dict[str, Any]) -> CompletionResponseGen:
        text = ""
        for chunk in stream:
            text += chunk
            yield CompletionResponse(text=text, delta=chunk, additional_kwargs=extra)
        final = self._final_extra(stream, extra)
        yield CompletionResponse(text=text, delta="", additional_kwargs=final, raw=_usage(final))

    async def _acompletion_gen(
        self, stream: AsyncECOStream, extra: dict[str, Any]
    ) -> CompletionResponseAsyncGen:
        text = ""
        async for chunk in stream:
            text += chunk
            yield CompletionResponse(text=text, delta=chunk, additional_kwargs=extra)
        final = self._final_extra(stream, extra)
        yield CompletionResponse(text=text, delta="", additional_kwargs=final, raw=_usage(final))

    def _chat_gen(self, stream: ECOStream, extra: dict[str, Any]) -> ChatResponseGen:
        for response in self._completion_gen(stream, extra):
            yield _as_chat(response)

    async def _achat_gen(
        self, stream: AsyncECOStream, extra: dict[str, Any]
    ) -> ChatResponseAsyncGen:
        async for response in self._acompletion_gen(stream, extra):
            yield _as_chat(response)

    # -- completion -----------------------------------------------------------------------------
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self._complete_response(prompt, formatted, kwargs)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        stream = self._open_stream(self._completion_input(prompt, formatted), kwargs)
        return self._completion_gen(stream, self._extra(stream))

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        # The worker thread copies the context, so the query-scoped decision travels along.
        return await cancellable_in_thread(
            lambda cancel: self._complete_response(prompt, formatted, kwargs, cancel)
        )

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        stream = await self._aopen_stream(self._completion_input(prompt, formatted), kwargs)
        return self._acompletion_gen(stream, self._extra(stream))

    # -- chat -----------------------------------------------------------------------------------
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._chat_response(messages, kwargs)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        stream = self._open_stream(self._chat_input(messages), kwargs)
        return self._chat_gen(stream, self._extra(stream))

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await cancellable_in_thread(
            lambda cancel: self._chat_response(messages, kwargs, cancel)
        )

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        stream = await self._aopen_stream(self._chat_input(messages), kwargs)
        return self._achat_gen(stream, self._extra(stream))

    # -- prompt templates: classify the question, not the stuffed prompt ------------------------
    def _question_decision(
        self, prompt: BasePromptTemplate, prompt_args: dict[str, Any]
    ) -> Decision | None:
        """The decision on the template's ``query_str`` when no query scope is active.

        Synthesizers pass the question as a partially formatted ``query_str`` and the retrieved
        context as ``context_str``; the guard should read only the question.
        """
        if active_decision() is not None:
            return None
        question = prompt_args.get("query_str") or (getattr(prompt, "kwargs", None) or {}).get(
            "query_str"
        )
        if not isinstance(question, str) or not question.strip():
            return None
        decision = self._decide_question(question)
        emit_decision(decision, scope="llm")
        return decision

    def _question_scope(
        self, prompt: BasePromptTemplate, prompt_args: dict[str, Any]
    ) -> AbstractContextManager[Any]:
        decision = self._question_decision(prompt, prompt_args)
        return decision_scope(decision) if decision is not None else nullcontext()

    def predict(self, prompt: BasePromptTemplate, **prompt_args: Any) -> str:
        with self._question_scope(prompt, prompt_args):
            return super().predict(prompt, **prompt_args)

    def stream(self, prompt: BasePromptTemplate, **prompt_args: Any) -> TokenGen:
        # stream_complete/stream_chat take their decision eagerly, inside this scope.
        with self._question_scope(prompt, prompt_args):
            return super().stream(prompt, **prompt_args)

    async def apredict(self, prompt: BasePromptTemplate, **prompt_args: Any) -> str:
        with self._question_scope(prompt, prompt_args):
            return await super().apredict(prompt, **prompt_args)

    async def astream(self, prompt: BasePromptTemplate, **prompt_args: Any) -> TokenAsyncGen:
        with self._question_scope(prompt, prompt_args):
            return await super().astream(prompt, **prompt_args)

    # Structured outputs format the same templates (a program calls chat or complete with the
    # stuffed prompt): the question is what the guard reads there too.
    def structured_predict(
        self,
        output_cls: type[Model],
        prompt: PromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Model:
        with self._question_scope(prompt, prompt_args):
            result: Model = super().structured_predict(
                output_cls, prompt, llm_kwargs, **prompt_args
            )
        return result

    async def astructured_predict(
        self,
        output_cls: type[Model],
        prompt: PromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Model:
        decision = await asyncio.to_thread(self._question_decision, prompt, prompt_args)
        with decision_scope(decision) if decision is not None else nullcontext():
            result: Model = await super().astructured_predict(
                output_cls, prompt, llm_kwargs, **prompt_args
            )
        return result

    def stream_structured_predict(
        self,
        output_cls: type[Model],
        prompt: PromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Generator[Model | FlexibleModel, None, None]:
        decision = self._question_decision(prompt, prompt_args)
        steps = super().stream_structured_predict(output_cls, prompt, llm_kwargs, **prompt_args)
        # The program starts the LLM call at the first step, after this returns.
        return steps if decision is None else steps_in_scope(steps, decision)

    async def astream_structured_predict(
        self,
        output_cls: type[Model],
        prompt: PromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> AsyncGenerator[Model | FlexibleModel, None]:
        decision = await asyncio.to_thread(self._question_decision, prompt, prompt_args)
        if decision is None:
            return await super().astream_structured_predict(
                output_cls, prompt, llm_kwargs, **prompt_args
            )
        with decision_scope(decision):
            steps = await super().astream_structured_predict(
                output_cls, prompt, llm_kwargs, **prompt_args
            )
        return asteps_in_scope(steps, decision)


def _as_chat(response: CompletionResponse) -> ChatResponse:
    return ChatResponse(
        message=ChatMessage(role=MessageRole.ASSISTANT, content=response.text),
        delta=response.delta,
        additional_kwargs=response.additional_kwargs,
        raw=response.raw,
    )


def _check_room(context_window: int | None, max_new_tokens: int, model_window: int) -> None:
    """Refuse an answer that leaves no room for a prompt (LlamaIndex would fail later, in its
    prompt helper, with a negative context size)."""
    window = context_window or model_window
    if max_new_tokens >= window:
        msg = f"max_new_tokens={max_new_tokens} leaves no room for a prompt in a {window}-token context window; pass a smaller max_new_tokens."
        raise ConfigurationError(msg)


def _usage(extra: dict[str, Any]) -> dict[str, Any]:
    """The response's ``raw``: the token usage, where LlamaIndex's TokenCountingHandler reads
    it (without it, it counts the text with its own tokenizer, not the model's)."""
    prompt, completion = extra["prompt_tokens"], extra["completion_tokens"] or 0
    return {
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
    }


def _message_text(message: ChatMessage, index: int) -> str:
    """The message's text blocks, joined as ``ChatMessage.content`` joins them; anything else refused.

    ``ChatMessage.content`` drops images, audio and documents without a word, so the model would
    answer a question it was only partly shown (and the guard would score only part of it).
    """
    parts: list[str] = []
    for block in message.blocks:
        if isinstance(block, TextBlock):
            parts.append(block.text)
        elif (
            isinstance(block, _ASSISTANT_SKIPPED_BLOCKS)
            and _ROLES.get(MessageRole(message.role)) == "assistant"
        ):
            continue
        else:
            msg = (
                f"Message {index} ({message.role.value}) holds a content block of type {type(block).__name__}; this chat "
                "template renders text only. Send the text, or describe the content in words."
            )
            raise InvalidInputError(msg)
    return "\n".join(parts)

"""The OpenAI wire format of the gateway: request models, errors, prompts out of requests, response bodies."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.responses import Response

from .._prompting import normalize_messages
from ..config import Decision
from ..engine import ECOResult
from ..exceptions import ContextLengthError, ECOError, GuardFailureError, InvalidInputError

LOGGED_STRING_CHARS = 64
"""Client-chosen strings (the ``model`` name) are cut to this length in logs and error messages."""


SURROGATE_ESCAPE = re.compile(rb"\\[uU][dD][89a-fA-F]")


class APIError(Exception):
    """An error the client sees, in OpenAI's shape: ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.headers = dict(headers or {})
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code

    def response(self, headers: Mapping[str, str] | None = None) -> Response:
        body = {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }
        # ASCII escapes: a message quoting client text can never fail to encode.
        return Response(
            json.dumps(body).encode(),
            status_code=self.status,
            headers={**self.headers, **(headers or {})},
            media_type="application/json",
        )


def engine_error(err: BaseException, prompt_param: str = "messages") -> APIError:
    """Map an engine or backend exception to the status a client should see."""
    from ..backends.vllm import BackendUnavailableError

    if isinstance(err, BackendUnavailableError):
        # Upstream 4xx (except 429) means this gateway built a bad request: a server bug, not the client's.
        upstream = err.status_code
        status = 503 if upstream in (None, 429, 503) else 502
        return APIError(status, str(err), type_="server_error", code="upstream_error")
    if isinstance(err, GuardFailureError):  # fail closed: refused, never answered unguarded
        return APIError(
            500,
            "The guard could not classify this request, so it was refused; the gateway log has the details.",
            type_="server_error",
            code="guard_failure",
            # The openai SDK (and the LangChain and LlamaIndex clients over it) retry a 500 twice;
            # a broken guard answers the same, so the retries only add load.
            headers={"x-should-retry": "false"},
        )
    if isinstance(err, ContextLengthError):
        return APIError(400, str(err), param=prompt_param, code="context_length_exceeded")
    if isinstance(err, ECOError):  # bad input, unknown settings: the request's fault
        return APIError(400, str(err))
    return APIError(
        500,
        "The server had an error while processing your request; the gateway log has the details.",
        type_="server_error",
    )


class Sampling(BaseModel):
    """Fields shared by chat and text completions; unknown fields are ignored, as OpenAI's are.

    Validated in pydantic's strict mode: ``max_tokens: true`` or ``"5"`` is a 400, not 1 or 5.
    """

    model_config = ConfigDict(extra="ignore", strict=True)

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)  # OpenAI takes 0: the likeliest token
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)  # OpenAI's: any signed 64-bit
    n: int | None = Field(None, ge=1)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logprobs: Any = None
    logit_bias: dict[str, Any] | None = None
    # vLLM's sampling extensions, which OpenAI-compatible clients send through extra_body.
    top_k: int | None = Field(None, ge=-1)
    repetition_penalty: float | None = Field(None, gt=0.0)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    user: str | None = None


class ChatCompletionRequest(Sampling):
    messages: list[dict[str, Any]]
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None  # the legacy form of tools
    function_call: Any = None
    response_format: dict[str, Any] | None = None


class CompletionRequest(Sampling):
    prompt: str | list[str]
    echo: bool | None = False
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1)

    @field_validator("prompt", mode="before")
    @classmethod
    def _text_not_token_ids(cls, value: object) -> object:
        # The API also takes token ids (a list of ints, or of lists); the guard reads text.
        if isinstance(value, list) and any(
            isinstance(item, int) or (isinstance(item, list) and item) for item in value
        ):
            msg = "token-id prompts are not taken here, as the guard classifies text; send the prompt as a string (or a list of strings)"
            raise ValueError(msg)
        return value


def unknown_model(name: str) -> APIError:
    return APIError(
        404,
        f"The model `{clip(name)}` does not exist; GET /v1/models lists the model this gateway serves.",
        param="model",
        code="model_not_found",
    )


def clip(text: str, limit: int = LOGGED_STRING_CHARS) -> str:
    """A client-chosen string as logs and error messages show it: cut, with its full length."""
    return text if len(text) <= limit else f"{text[:limit]}…({len(text)} chars)"


def refuse_constant(name: str) -> Any:
    raise APIError(
        400,
        f"The request body holds {name}, which is not JSON; send finite numbers.",
        code="invalid_json",
    )


def parse(model: type[Sampling], body: Any) -> Any:
    if not isinstance(body, dict):
        raise APIError(
            400,
            f"The request body must be a JSON object, got {type(body).__name__}.",
            code="invalid_json",
        )
    try:
        return model.model_validate(body)
    except ValidationError as err:
        raise validation_error(err) from None


def validation_error(err: ValidationError) -> APIError:
    first = err.errors()[0]
    param = ".".join(str(p) for p in first.get("loc", ())) or None
    if first.get("type") == "missing":
        return APIError(
            400,
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    problem = str(first.get("msg", "")).removeprefix("Value error, ").rstrip(".")
    return APIError(
        400, f"Invalid value for '{param}': {problem}.", param=param, code="invalid_value"
    )


def prompts_of(
    parsed: Sampling, chat: bool, *, max_messages: int, max_prompts: int
) -> tuple[list[Any], bool]:
    if chat:
        assert isinstance(parsed, ChatCompletionRequest)
        if not parsed.messages:
            raise APIError(
                400, "messages is empty; send at least one user message.", param="messages"
            )
        if len(parsed.messages) > max_messages:
            raise APIError(
                400,
                f"messages has {len(parsed.messages)} entries; this gateway takes at most {max_messages}. "
                "Drop older turns.",
                param="messages",
            )
        messages = [_message(m, i) for i, m in enumerate(parsed.messages)]
        try:
            # The engine's own check of a conversation (a user turn to decide on, known roles,
            # text content), here so that its error names the field at fault.
            normalize_messages(messages)
        except InvalidInputError as err:
            raise APIError(400, str(err), param="messages") from None
        return [messages], False
    assert isinstance(parsed, CompletionRequest)
    prompts = [parsed.prompt] if isinstance(parsed.prompt, str) else list(parsed.prompt)
    if not prompts:
        raise APIError(400, "prompt is empty; send a string.", param="prompt")
    if len(prompts) > max_prompts:
        raise APIError(
            400,
            f"prompt holds {len(prompts)} prompts; this gateway takes at most {max_prompts} per request. "
            "Split them over several requests.",
            param="prompt",
        )
    return prompts, True


def _message(message: Mapping[str, Any], index: int) -> dict[str, Any]:
    """An OpenAI message as the engine takes it: text content, OpenAI's ``developer`` as ``system``."""
    role = message.get("role")
    if role == "developer":
        role = "system"
    content = message.get("content")
    if isinstance(content, list):
        parts = []
        for part in content:
            if (
                not isinstance(part, Mapping)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise APIError(
                    400,
                    f"messages[{index}] has a non-text content part; the ECO gateway takes text only.",
                    param=f"messages.{index}.content",
                )
            parts.append(part["text"])
        content = "\n".join(parts)
    out: dict[str, Any] = {"role": role, "content": content}
    if message.get("tool_calls"):
        out["tool_calls"] = message["tool_calls"]
    # Chat templates that render a speaker's name or match a tool result to its call read these.
    # The guard does not read them, so they must be identifiers (OpenAI's rule for names), not
    # text: a template that renders the name would otherwise show the model an unread question.
    for key, pattern in _IDENTIFIERS.items():
        value = message.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise APIError(
                400,
                f"messages[{index}].{key} must be an identifier of at most 64 letters, digits, "
                f"'_' or '-'{' (and . :)' if key == 'tool_call_id' else ''}; put text in content.",
                param=f"messages.{index}.{key}",
                code="invalid_value",
            )
        out[key] = value
    return out


_IDENTIFIERS = {
    "name": re.compile(r"[A-Za-z0-9_-]{1,64}"),
    "tool_call_id": re.compile(r"[A-Za-z0-9_.:-]{1,64}"),
}


def decision_log(decision: Decision) -> dict[str, Any]:
    return decision.model_dump(mode="json")


def _usage(results: Sequence[ECOResult]) -> dict[str, int]:
    prompt = sum(r.prompt_tokens for r in results)
    completion = sum(r.completion_tokens for r in results)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def chat_body(results: Sequence[ECOResult], request_id: str, model: str) -> dict[str, Any]:
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": r.text},
            "finish_reason": r.finish_reason,
            "logprobs": None,
        }
        for i, r in enumerate(results)
    ]
    return _body("chat.completion", choices, results, request_id, model)


def text_body(results: Sequence[ECOResult], request_id: str, model: str) -> dict[str, Any]:
    choices = [
        {"index": i, "text": r.text, "finish_reason": r.finish_reason, "logprobs": None}
        for i, r in enumerate(results)
    ]
    return _body("text_completion", choices, results, request_id, model)


def _body(
    kind: str,
    choices: list[dict[str, Any]],
    results: Sequence[ECOResult],
    request_id: str,
    model: str,
) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": _usage(results),
    }

"""The ECO gateway: an OpenAI-compatible HTTP server that applies a guard to every request.

Clients speak the OpenAI API (``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``);
the gateway classifies what the client wrote (every role, unless the policy's
``classify_roles`` says otherwise: see :func:`served_engine`), corrupts the prompt embeddings
of flagged requests and forwards to a backend: the in-process transformers engine, or a vLLM
server (token ids for benign requests, prompt embeddings for flagged ones). It keeps no state between requests, so N
replicas behind a load balancer serve like one.

Built on Starlette (routing, requests, streaming) and served by uvicorn: a thin ASGI stack whose
own cost per request is well under a millisecond, so the gateway's overhead is the guard.

Each request leaves one JSON log line on the ``eco_integrations.serving.access`` logger with
its decision (flagged, score, target, corrupted, policy version, hash of the classified text)
and never the prompt or the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..config import CHAT_ROLES, GenerationConfig
from ..engine import ECO, ECORequest, ECOResult
from ..exceptions import ConfigurationError, ECOError, GuardFailureError
from ._flow import (
    Admission,
    ClientGoneError,
    DeadlineExceededError,
    Slot,
    SlotStreamingResponse,
    deadline_error,
    disconnected,
    in_thread,
    pump,
)
from ._wire import (
    SURROGATE_ESCAPE,
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    Sampling,
    chat_body,
    clip,
    decision_log,
    engine_error,
    parse,
    prompts_of,
    refuse_constant,
    text_body,
    unknown_model,
    validation_error,
)
from .auth import KeyChecker, check_keys
from .metrics import GatewayMetrics, route_label

access_log = logging.getLogger("eco_integrations.serving.access")
logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 1_048_576
DEFAULT_MAX_TOKENS = 256
OPEN_PATHS = frozenset({"/health", "/ready"})
"""Paths that answer without an API key (load-balancer probes); everything else needs one."""
STREAM_STATUS = "eco_stream_status"
"""Where a stream leaves, in ``request.state``, the status it ended with (for the request counter)."""


def asked_max_tokens(parsed: Sampling) -> tuple[int | None, str]:
    """The completion limit the client set (None: none), and the field it set it in (a chat
    request's ``max_completion_tokens`` wins over the older ``max_tokens``, as in OpenAI's API)."""
    newer = getattr(parsed, "max_completion_tokens", None)
    if newer:
        return newer, "max_completion_tokens"
    return parsed.max_tokens or None, "max_tokens"


def fitted(
    engine: ECO,
    prompts: list[Any],
    raw: bool,
    seed: int | None,
    config: GenerationConfig,
    *,
    fit: bool,
) -> tuple[list[ECORequest], GenerationConfig]:
    """The prompts prepared (decided and rendered), and the config to generate them with.

    A client that set no ``max_tokens`` gets at most the room the context window leaves after
    the longest prompt, as OpenAI and vLLM answer, instead of a 400 for the default it never
    asked for; a limit the client set is kept, and refused when it does not fit.
    """
    requests = engine.prepare_many(prompts, raw=raw, seeds=[seed] * len(prompts))
    if fit:
        room = engine.backend.context_window - max(r.prompt_tokens for r in requests)
        if 0 < room < config.max_new_tokens:
            config = config.model_copy(update={"max_new_tokens": room})
    return requests, config


@dataclass(frozen=True)
class GatewaySettings:
    """Limits and identity of one gateway process (frozen: the gateway reads some of them once,
    when built, so a change afterwards could not take effect; build a new gateway)."""

    model_id: str | None = None
    """The name clients put in ``model`` (default: the backend's model name)."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """Larger request bodies get 413 before they are parsed."""
    default_max_tokens: int = DEFAULT_MAX_TOKENS
    """``max_tokens`` when a request leaves it out."""
    max_tokens_limit: int = 4096
    """The most new tokens one request may ask for."""
    max_concurrency: int = 64
    """Requests generating at once (streams included); the rest wait in the queue."""
    max_queue: int = 256
    """Requests waiting for a generation slot; beyond it, 429 with ``Retry-After``."""
    request_timeout: float | None = None
    """Seconds from arrival to the last token; past it, generation is cancelled and the client gets 504."""
    max_stop: int = 4
    """Stop sequences per request (OpenAI's limit): each one is checked at every new token."""
    max_stop_chars: int = 64
    """Characters per stop sequence."""
    max_prompts: int = 16
    """Prompts per ``/v1/completions`` request (each one is a generation)."""
    max_messages: int = 512
    """Messages per chat request."""
    api_keys: tuple[str, ...] = ()
    """Accepted ``Authorization: Bearer`` keys; empty means no key is asked for."""
    retry_after_s: int = 1
    """``Retry-After`` of a 429."""
    cors_origins: tuple[str, ...] = ()
    """Browser origins (``https://app.example.com``, or ``*``) allowed to call the API from a web
    page (CORS); empty: no CORS headers, so browsers refuse pages of other origins."""

    def __post_init__(self) -> None:
        check_cors_origins(self.cors_origins)
        check_keys(self.api_keys)  # a string of one key would open the gateway to every letter


def check_cors_origins(origins: Sequence[str]) -> None:
    """Each origin must be ``*`` or ``scheme://host[:port]`` as a browser sends it; others named."""
    for origin in origins:
        if origin == "*":
            continue
        scheme, _, rest = origin.partition("://")
        if scheme not in ("http", "https") or not rest or "/" in rest or origin != origin.strip():
            msg = (
                f"CORS origin {origin!r} is not an origin: give scheme://host[:port] as the "
                "browser sends it (e.g. https://app.example.com, no path or trailing slash), or *."
            )
            raise ConfigurationError(msg)


class _ASGIApp:
    """An ASGI 3 app object (servers detect ASGI 3 from an async ``__call__``, not from a bound method)."""

    def __init__(self, handler: Callable[[Any, Any, Any], Any]) -> None:
        self._handler = handler

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._handler(scope, receive, send)


@dataclass
class _State:
    engine: ECO | None = None
    # The engine given (or loaded), and its settings when ``engine`` was derived from it: a
    # change to them afterwards (engine.mode = "enforce") is served from the next request.
    source: ECO | None = None
    source_settings: tuple[Any, ...] | None = None
    load_error: str | None = None
    draining: bool = False
    upstream_healthy: Callable[[], bool] | None = None
    started: float = field(default_factory=time.time)


def _engine_settings(engine: ECO, *, kept: bool = False) -> tuple[Any, ...]:
    """What serving ``engine`` depends on; ``kept``: a copy of its policy, to compare later."""
    return (
        engine.mode,
        engine.policy.model_copy(deep=True) if kept else engine.policy,
        engine.guard,
        engine.backend,
        engine.on_guard_error,
        engine.batch_size,
    )


def served_engine(engine: ECO) -> ECO:
    """``engine`` as the gateway serves it: a policy that leaves ``classify_roles`` unset has the
    guard read every message, since an API client writes the system prompt, the assistant turns
    and the tool results as freely as its question (the library's skins read the user's turns
    only, their application writing the rest)."""
    if engine.policy.classify_roles is not None:
        return engine
    return engine.replace(policy=engine.policy.model_copy(update={"classify_roles": CHAT_ROLES}))


# -- the app ---------------------------------------------------------------------------------------
class Gateway:
    """The ECO gateway as an ASGI app (``gateway.app``).

    >>> gateway = Gateway(ECO.from_pretrained(guard="guards/hp"))        # doctest: +SKIP
    >>> uvicorn.run(gateway.app, host="127.0.0.1", port=8080)            # doctest: +SKIP

    ``engine`` may also be a zero-argument callable: it then runs in a background thread at
    startup, ``/health`` answers at once and ``/ready`` turns 200 when the engine is loaded.
    """

    def __init__(
        self, engine: ECO | Callable[[], ECO], *, settings: GatewaySettings | None = None
    ) -> None:
        self.settings = settings or GatewaySettings()
        self.state = _State()
        self.metrics = GatewayMetrics()
        self.admission = Admission(self.settings.max_concurrency, self.settings.max_queue)
        self.keys = KeyChecker(self.settings.api_keys)
        self._swap_lock = threading.Lock()
        self._factory: Callable[[], ECO] | None = None
        self.on_load_error: Callable[[str], None] | None = None
        """Called (from the loader thread) when a background load fails: ``eco serve`` exits."""
        if isinstance(engine, ECO):
            self._attach(engine)
        else:
            self._factory = engine
        routes = [
            Route("/health", self.health, methods=["GET"]),
            Route("/ready", self.ready, methods=["GET"]),
            Route("/metrics", self.metrics_endpoint, methods=["GET"]),
            Route("/v1/models", self.list_models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", self.get_model, methods=["GET"]),
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
        ]
        self.starlette = Starlette(
            routes=routes,
            exception_handlers={HTTPException: self._http_error, Exception: self._unexpected},
            lifespan=self._lifespan,
        )
        self.app: Any = _ASGIApp(self._edge)
        if self.settings.cors_origins:
            from starlette.middleware.cors import CORSMiddleware

            # Outside the key check: a browser's preflight carries no Authorization header.
            self.app = CORSMiddleware(
                self.app,
                allow_origins=list(self.settings.cors_origins),
                allow_methods=["GET", "POST"],
                # The SDKs send their own headers (x-stainless-*): the preflight's are mirrored.
                allow_headers=["*"],
                expose_headers=["x-request-id", "x-should-retry", "retry-after"],
                max_age=600,
            )

    # -- the edge: keys and request counts, before routing ---------------------------------------
    async def _edge(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.starlette(scope, receive, send)
            return
        path = scope.get("path", "")
        status = [500]

        async def counted_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if self.keys.enabled and path not in OPEN_PATHS:
                headers = dict(scope.get("headers") or [])
                used = self.keys.check(headers.get(b"authorization", b"").decode("latin-1"))
                if used is None:
                    self.metrics.rejected.labels(reason="unauthorized").inc()
                    err = APIError(
                        401,
                        "Incorrect or missing API key: send `Authorization: Bearer KEY` with a key this gateway was given.",
                        type_="invalid_request_error",
                        code="invalid_api_key",
                    )
                    await err.response({"www-authenticate": "Bearer"})(scope, receive, counted_send)
                    return
                scope.setdefault("state", {})["key_fingerprint"] = used
            await self.starlette(scope, receive, counted_send)
        finally:
            # A stream's headers say 200 before its answer exists; an answer that then failed
            # (an in-band error event) or lost its client is counted by how it ended.
            ended = (scope.get("state") or {}).get(STREAM_STATUS, status[0])
            self.metrics.requests.labels(route=route_label(path), status=str(ended)).inc()

    # -- lifecycle -----------------------------------------------------------------------------
    def _attach(self, engine: ECO) -> None:
        source, engine = engine, served_engine(engine)
        # Warm the guard's encoder and the tokenizer so the first client does not pay for it.
        engine.decide("warm-up request")
        transport = getattr(engine.backend, "transport", None)
        self.state.upstream_healthy = getattr(transport, "healthy", None)
        self.state.source, self.state.source_settings = source, _engine_settings(source, kept=True)
        self.state.engine = engine
        self.metrics.set_guard(engine)

    def swap_engine(self, engine: ECO) -> None:
        """Serve ``engine`` (a new guard or policy) from the next request on.

        A request takes the engine once, when it starts, so requests in flight finish with the
        guard they started with; each decision record names the guard version it used.
        """
        source, engine = engine, served_engine(engine)
        engine.decide("warm-up request")  # the new guard answers before it is swapped in
        with self._swap_lock:
            self.state.source, self.state.source_settings = (
                source,
                _engine_settings(source, kept=True),
            )
            self.state.engine = engine
            self.metrics.set_guard(engine)

    def _current_engine(self) -> ECO | None:
        """The served engine, derived again when the engine it came from was changed since
        (``engine.mode = "enforce"`` after a shadow rollout must not keep serving shadow)."""
        state = self.state
        source = state.source
        if source is None or source is state.engine:
            return state.engine
        if _engine_settings(source) != state.source_settings:
            with self._swap_lock:
                if _engine_settings(source) != state.source_settings:
                    state.engine = served_engine(source)
                    state.source_settings = _engine_settings(source, kept=True)
                    self.metrics.set_guard(state.engine)
        return state.engine

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        if self._factory is not None and self.state.engine is None:
            factory = self._factory

            def load() -> None:
                try:
                    self._attach(factory())
                    logger.info("ECO gateway ready: model %s", self.model_id)
                except Exception as err:  # reported by /health, /ready and every request
                    logger.exception("loading the ECO engine failed")
                    self.state.load_error = f"{type(err).__name__}: {err}"
                    if self.on_load_error is not None:
                        self.on_load_error(self.state.load_error)

            threading.Thread(target=load, name="eco-engine-loader", daemon=True).start()
        yield
        self.state.draining = True

    def begin_shutdown(self) -> None:
        """Stop reporting ready (load balancers drain us) while in-flight requests finish."""
        self.state.draining = True

    @property
    def model_id(self) -> str:
        engine = self.state.engine
        return self.settings.model_id or (engine.backend.model_name if engine else "loading")

    def _engine(self) -> ECO:
        if self.state.draining:
            raise APIError(
                503,
                "The gateway is shutting down; retry on another replica.",
                type_="server_error",
                code="shutting_down",
            )
        engine = self._current_engine()
        if engine is None:
            if self.state.load_error:
                raise APIError(
                    503,
                    f"The ECO engine failed to load ({self.state.load_error}); see the gateway log.",
                    type_="server_error",
                )
            raise APIError(
                503,
                "The ECO engine is still loading; retry when /ready answers 200.",
                type_="server_error",
                code="loading",
            )
        return engine

    # -- small endpoints -----------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        """Liveness: the process answers (model loaded or loading); 503 once a load has failed,
        which no request can recover from, so that a supervisor restarts it."""
        if self.state.engine is None and self.state.load_error:
            return JSONResponse(
                {"status": "failed", "error": self.state.load_error}, status_code=503
            )
        return JSONResponse({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        """Readiness: engine loaded, not draining, and (for a vLLM backend) upstream healthy."""
        state = self.state
        in_flight = self.admission.running
        if state.draining:
            return JSONResponse({"status": "draining", "in_flight": in_flight}, status_code=503)
        if state.engine is None:
            status = "failed" if state.load_error else "loading"
            return JSONResponse({"status": status, "error": state.load_error}, status_code=503)
        if state.upstream_healthy is not None and not await anyio.to_thread.run_sync(
            state.upstream_healthy
        ):
            return JSONResponse({"status": "upstream unavailable"}, status_code=503)
        return JSONResponse(
            {
                "status": "ready",
                "model": self.model_id,
                "in_flight": in_flight,
                "queued": self.admission.waiting,
                "policy_version": state.engine.policy_version,
            }
        )

    async def metrics_endpoint(self, request: Request) -> Response:
        """Prometheus text format (needs a key when keys are configured)."""
        self.metrics.queue_depth.set(self.admission.waiting)
        self.metrics.in_flight.set(self.admission.running)
        body, content_type = self.metrics.render()
        return Response(
            body, media_type=content_type.split(";")[0], headers={"content-type": content_type}
        )

    def _model_card(self) -> dict[str, Any]:
        return {
            "id": self.model_id,
            "object": "model",
            "created": int(self.state.started),
            "owned_by": "eco-integrations",
        }

    async def list_models(self, request: Request) -> Response:
        return JSONResponse(
            {"object": "list", "data": [self._model_card()] if self.state.engine else []}
        )

    async def get_model(self, request: Request) -> Response:
        wanted = request.path_params["model_id"]
        if self.state.engine is None or wanted != self.model_id:
            return unknown_model(wanted).response()
        return JSONResponse(self._model_card())

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        path = clip(request.url.path)
        if exc.status_code == 404:
            err = APIError(
                404,
                f"Unknown path {path}; this server serves /v1/chat/completions, /v1/completions and /v1/models.",
            )
        elif exc.status_code == 405:
            err = APIError(405, f"{clip(request.method)} is not allowed on {path}.")
        else:
            err = APIError(exc.status_code, str(exc.detail))
        return err.response(exc.headers)

    async def _unexpected(self, request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error on %s", clip(request.url.path))
        return engine_error(exc).response()

    # -- completions ---------------------------------------------------------------------------
    async def chat_completions(self, request: Request) -> Response:
        return await self._serve(request, chat=True)

    async def completions(self, request: Request) -> Response:
        return await self._serve(request, chat=False)

    async def _serve(self, request: Request, *, chat: bool) -> Response:
        started = time.perf_counter()
        timeout = self.settings.request_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        request_id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        record: dict[str, Any] = {
            "event": "request",
            "request_id": request_id,
            "path": request.url.path,
            "key": request.scope.get("state", {}).get("key_fingerprint"),
        }
        cancel = threading.Event()
        try:
            engine = self._engine()
            body = await self._read_json(request)
            parsed = parse(ChatCompletionRequest if chat else CompletionRequest, body)
            record.update(model=clip(parsed.model), stream=bool(parsed.stream))
            if parsed.model != self.model_id:
                raise unknown_model(parsed.model)
            config, seed = self._generation(parsed, chat)
            asked = asked_max_tokens(parsed)[0] is not None
            prompts, raw = prompts_of(
                parsed,
                chat,
                max_messages=self.settings.max_messages,
                max_prompts=self.settings.max_prompts,
            )
            if parsed.stream:
                if len(prompts) != 1:
                    raise APIError(
                        400,
                        "Streaming takes one prompt per request; send one request per prompt.",
                        param="prompt",
                    )
                return await self._stream(
                    request,
                    engine,
                    prompts[0],
                    raw,
                    config,
                    seed,
                    asked,
                    parsed,
                    chat,
                    request_id,
                    record,
                    started,
                    deadline,
                )
            slot = Slot(self.admission)

            async def admitted() -> list[ECOResult]:
                await slot.acquire(self.settings.retry_after_s)
                begun = time.perf_counter()
                try:

                    def run() -> list[ECOResult]:
                        requests, fit = fitted(engine, prompts, raw, seed, config, fit=not asked)
                        return engine.generate(requests, config=fit, cancel=cancel)

                    done: list[ECOResult] = await in_thread(run, slot)
                    return done
                finally:
                    self.metrics.generation_latency.observe(time.perf_counter() - begun)

            results = await self._watch(request, deadline, cancel, admitted())
        except APIError as err:
            return self._fail(err, record, started)
        except (ClientDisconnect, ClientGoneError):
            record.update(status=499, disconnected=True)
            self._log(record, started)
            return Response(status_code=499)
        except Exception as err:  # engine and backend errors
            return self._fail(self._engine_failure(err, request_id, chat=chat), record, started)
        body_out = (
            chat_body(results, request_id, self.model_id)
            if chat
            else text_body(results, request_id, self.model_id)
        )
        self.metrics.observe_decisions([r.decision for r in results])
        self._log_results(record, results, started)
        return JSONResponse(body_out, headers={"x-request-id": request_id})

    def _engine_failure(self, err: BaseException, request_id: str, *, chat: bool) -> APIError:
        if isinstance(err, GuardFailureError):
            self.metrics.guard_errors.inc()
            logger.error("request %s refused: %s", request_id, err)
        elif not isinstance(err, ECOError):
            logger.error("request %s failed", request_id, exc_info=err)
        return engine_error(err, "messages" if chat else "prompt")

    async def _watch(
        self, request: Request, deadline: float | None, cancel: threading.Event, work: Any
    ) -> Any:
        """Await ``work`` unless the client leaves or the deadline passes first: then ``cancel`` is
        set (generation stops at the next token) and the request ends with 499 or 504.
        """
        task = asyncio.ensure_future(work)
        gone = asyncio.ensure_future(disconnected(request))
        try:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, _ = await asyncio.wait(
                {task, gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if task in done:
                return task.result()
            if gone in done:
                raise ClientGoneError
            self.metrics.rejected.labels(reason="timeout").inc()
            raise deadline_error(self.settings.request_timeout)
        finally:
            # Also on the way out of a cancelled task (uvicorn's shutdown timeout): stop the model.
            if not task.done():
                cancel.set()
                task.cancel()
            gone.cancel()

    async def _read_json(self, request: Request) -> Any:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise APIError(
                413,
                f"The request body is {clip(declared)} bytes; this gateway accepts at most {limit}. Shorten the prompt.",
                code="request_too_large",
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise APIError(
                    413,
                    f"The request body exceeds {limit} bytes; shorten the prompt.",
                    code="request_too_large",
                )
            chunks.append(chunk)
        raw = b"".join(chunks)
        try:
            body = json.loads(raw, parse_constant=refuse_constant)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            msg = f"The request body is not valid JSON ({err}); send a JSON object with Content-Type: application/json."
            raise APIError(400, msg, code="invalid_json") from None
        except RecursionError:
            raise APIError(
                400,
                "The request body is nested too deeply; send a flat JSON object.",
                code="invalid_json",
            ) from None
        if SURROGATE_ESCAPE.search(raw):
            # A \ud800 escape decodes to a lone surrogate, which is not text any tokenizer takes.
            try:
                json.dumps(body, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                msg = "The request body holds a lone UTF-16 surrogate escape (\\ud800-\\udfff without its pair); send valid Unicode text."
                raise APIError(400, msg, code="invalid_unicode") from None
        return body

    def _generation(self, parsed: Sampling, chat: bool) -> tuple[GenerationConfig, int | None]:
        if parsed.n not in (None, 1):
            raise APIError(
                400, "n > 1 is not supported; send n requests with different seeds.", param="n"
            )
        if parsed.logprobs not in (None, False, 0):
            raise APIError(
                400,
                "logprobs are not supported by the ECO gateway; leave logprobs unset.",
                param="logprobs",
            )
        # Accepted and dropped, these would change nothing in the answer while the client thinks
        # they did; zero (what some clients send by default) is what the model does anyway.
        for name in ("frequency_penalty", "presence_penalty"):
            if getattr(parsed, name) not in (None, 0):
                raise APIError(
                    400,
                    f"{name} is not supported by the ECO gateway; leave it unset or 0.",
                    param=name,
                )
        if parsed.min_p:
            raise APIError(
                400,
                "min_p is not supported by the ECO gateway; leave it unset or 0.",
                param="min_p",
            )
        if parsed.logit_bias:
            raise APIError(
                400,
                "logit_bias is not supported by the ECO gateway; leave it unset.",
                param="logit_bias",
            )
        if parsed.stream_options and not parsed.stream:
            raise APIError(
                400,
                "stream_options is only allowed when stream is true.",
                param="stream_options",
            )
        if isinstance(parsed, ChatCompletionRequest):
            if parsed.functions or parsed.function_call not in (None, "none"):
                raise APIError(
                    400,
                    "Function calling is not supported by the ECO gateway; send plain messages.",
                    param="functions",
                )
            if parsed.tool_choice not in (None, "none", "auto"):
                raise APIError(
                    400,
                    "tool_choice needs tools, which the ECO gateway does not take; leave it unset.",
                    param="tool_choice",
                )
            if parsed.tools:
                raise APIError(
                    400,
                    "Tool calling is not supported by the ECO gateway; send plain messages.",
                    param="tools",
                )
            if parsed.response_format and parsed.response_format.get("type") not in (None, "text"):
                raise APIError(
                    400,
                    "Only response_format {'type': 'text'} is supported.",
                    param="response_format",
                )
        if isinstance(parsed, CompletionRequest) and (
            parsed.echo or parsed.suffix or (parsed.best_of or 1) > 1
        ):
            raise APIError(
                400,
                "echo, suffix and best_of > 1 are not supported by the ECO gateway.",
                param="echo",
            )
        wanted, named = asked_max_tokens(parsed)
        max_tokens = wanted or self.settings.default_max_tokens
        if max_tokens > self.settings.max_tokens_limit:
            raise APIError(
                400,
                f"{named} is {max_tokens}; this gateway allows at most {self.settings.max_tokens_limit}.",
                param=named,
            )
        stops = [parsed.stop] if isinstance(parsed.stop, str) else list(parsed.stop or [])
        if len(stops) > self.settings.max_stop:
            raise APIError(
                400,
                f"stop has {len(stops)} sequences; this gateway allows at most {self.settings.max_stop}.",
                param="stop",
            )
        if any(len(stop) > self.settings.max_stop_chars for stop in stops):
            raise APIError(
                400,
                f"A stop sequence is longer than {self.settings.max_stop_chars} characters; shorten it.",
                param="stop",
            )
        try:
            config = GenerationConfig(
                max_new_tokens=max_tokens,
                # top_p 0 keeps only the likeliest token: greedy decoding.
                temperature=(
                    0.0
                    if parsed.top_p == 0
                    else 1.0
                    if parsed.temperature is None
                    else parsed.temperature
                ),
                top_p=1.0 if not parsed.top_p else parsed.top_p,
                # vLLM's convention: top_k -1 or 0 means no cut.
                top_k=parsed.top_k if parsed.top_k and parsed.top_k > 0 else None,
                repetition_penalty=parsed.repetition_penalty,
                stop=parsed.stop,
            )
        except ValidationError as err:
            raise validation_error(err) from None
        # The engine's seeds are [0, 2**63); a negative OpenAI seed maps onto one, still fixed.
        return config, None if parsed.seed is None else parsed.seed % 2**63

    async def _stream(
        self,
        request: Request,
        engine: ECO,
        prompt: Any,
        raw: bool,
        config: GenerationConfig,
        seed: int | None,
        asked: bool,
        parsed: Sampling,
        chat: bool,
        request_id: str,
        record: dict[str, Any],
        started: float,
        deadline: float | None,
    ) -> Response:
        cancel = threading.Event()
        slot = Slot(self.admission)

        async def admitted() -> Any:
            await slot.acquire(self.settings.retry_after_s)
            try:
                # Decide (and validate, and check the context length) before the first byte, so those
                # errors still get a real status code instead of an error event inside a 200 stream.
                def opened() -> Any:
                    (prepared,), fit = fitted(engine, [prompt], raw, seed, config, fit=not asked)
                    return engine.stream(prepared, config=fit, cancel=cancel)

                return await in_thread(opened, None)
            except BaseException:
                slot.release()
                raise

        stream = await self._watch(request, deadline, cancel, admitted())
        self.metrics.observe_decisions([stream.decision])
        include_usage = bool((parsed.stream_options or {}).get("include_usage"))
        created = int(time.time())
        model = self.model_id
        record["decision"] = decision_log(stream.decision)
        begun = time.perf_counter()

        def event(
            delta: dict[str, Any] | str | None,
            finish: str | None,
            usage: dict[str, int] | None = None,
        ) -> bytes:
            if chat:
                choices = (
                    []
                    if delta is None
                    else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
                )
                obj: dict[str, Any] = {
                    "id": request_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": choices,
                }
            else:
                choices = (
                    []
                    if delta is None
                    else [{"index": 0, "text": delta, "finish_reason": finish, "logprobs": None}]
                )
                obj = {
                    "id": request_id,
                    "object": "text_completion",
                    "created": created,
                    "model": model,
                    "choices": choices,
                }
            if usage is not None:
                obj["usage"] = usage
            return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"

        def error_event(api: APIError) -> bytes:
            return (
                b"data: "
                + json.dumps(
                    {
                        "error": {
                            "message": api.message,
                            "type": api.type,
                            "param": None,
                            "code": api.code,
                        }
                    }
                ).encode()
                + b"\n\n"
            )

        async def body() -> AsyncIterator[bytes]:
            status = 200
            try:
                if chat:
                    yield event({"role": "assistant", "content": ""}, None)
                async for chunk in pump(stream, cancel, slot, deadline):
                    yield event({"content": chunk} if chat else chunk, None)
                # The backend's own count and reason, known once the last chunk has been read.
                completion_tokens = stream.completion_tokens or 0
                finish = stream.finish_reason or "stop"
                yield event({} if chat else "", finish)
                usage = {
                    "prompt_tokens": stream.prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": stream.prompt_tokens + completion_tokens,
                }
                if include_usage:
                    yield event(None, None, usage)
                yield b"data: [DONE]\n\n"
                record.update(usage, finish_reason=finish)
                self.metrics.observe_tokens(stream.prompt_tokens, completion_tokens)
            except (asyncio.CancelledError, GeneratorExit, OSError):
                status = 499  # the client went away; pump's cleanup stops generation
                record["disconnected"] = True
                raise
            except DeadlineExceededError:
                # Headers are sent: report in-band, as OpenAI does, then end the stream.
                self.metrics.rejected.labels(reason="timeout").inc()
                api = deadline_error(self.settings.request_timeout)
                status = api.status
                yield error_event(api)
            except Exception as err:
                api = self._engine_failure(err, request_id, chat=chat)
                status = api.status
                yield error_event(api)
            finally:
                cancel.set()
                self.metrics.generation_latency.observe(time.perf_counter() - begun)
                record["status"] = status
                setattr(request.state, STREAM_STATUS, status)
                self._log(record, started)

        return SlotStreamingResponse(
            body(),
            slot=slot,
            cancel=cancel,
            media_type="text/event-stream",
            headers={"x-request-id": request_id, "cache-control": "no-cache"},
        )

    # -- logging -------------------------------------------------------------------------------
    def _fail(self, err: APIError, record: dict[str, Any], started: float) -> Response:
        if err.status == 429:
            self.metrics.rejected.labels(reason="queue_full").inc()
        record.update(status=err.status, error=err.code or err.type)
        self._log(record, started)
        # As on a success: the id a client quotes when it asks what went wrong.
        request_id = record.get("request_id")
        return err.response({"x-request-id": request_id} if request_id else None)

    def _log_results(
        self, record: dict[str, Any], results: Sequence[ECOResult], started: float
    ) -> None:
        decisions = [decision_log(r.decision) for r in results]
        prompt_tokens = sum(r.prompt_tokens for r in results)
        completion_tokens = sum(r.completion_tokens for r in results)
        record.update(
            status=200,
            decision=decisions[0] if len(decisions) == 1 else decisions,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            finish_reason=[r.finish_reason for r in results]
            if len(results) > 1
            else results[0].finish_reason,
        )
        self._log(record, started)

    @staticmethod
    def _log(record: dict[str, Any], started: float) -> None:
        record["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
        access_log.info(json.dumps(record, ensure_ascii=False, default=str))

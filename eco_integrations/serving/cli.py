"""The ``eco serve`` command: the OpenAI-compatible ECO gateway.

:func:`register` is called by ``eco_integrations.cli.build_parser`` with the top-level
subparsers.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._console import port_number
from ..exceptions import ConfigurationError, InvalidInputError, require

log = logging.getLogger(__name__)


def build_engine(
    guard: str | os.PathLike[str],
    *,
    model: str | None = None,
    vllm_url: str | None = None,
    mode: str = "enforce",
    on_guard_error: str = "fail",
) -> Any:
    """An ECO engine over a guard folder (and its ``policy.json``), on transformers or a vLLM server."""
    from ..config import ECOPolicy
    from ..engine import ECO
    from ..guard import Guard

    folder = Path(guard)
    policy = ECOPolicy.load(folder) if (folder / "policy.json").is_file() else None
    loaded = Guard.load(folder)
    if vllm_url:
        from ..backends.vllm import VLLMBackend

        backend: Any = VLLMBackend.from_server(vllm_url, model=model)
    else:
        from ..backends.transformers import TransformersBackend

        backend = TransformersBackend.from_pretrained(model)
    return ECO(backend, loaded, policy=policy, mode=mode, on_guard_error=on_guard_error)  # type: ignore[arg-type]


def configure_access_log(stream: Any = None) -> None:
    """One JSON object per line on stderr for ``eco_integrations.serving.access``."""
    access = logging.getLogger("eco_integrations.serving.access")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.handlers = [handler]
    access.setLevel(logging.INFO)
    access.propagate = False


def serve(
    guard: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    model: str | None = None,
    vllm_url: str | None = None,
    mode: str = "enforce",
    model_id: str | None = None,
    max_body_bytes: int | None = None,
    max_concurrency: int = 64,
    shutdown_timeout: float = 30.0,
    torch_threads: int | None = None,
    api_keys: Sequence[str] = (),
    allow_unauthenticated: bool = False,
    max_queue: int = 256,
    request_timeout: float | None = None,
    on_guard_error: str = "fail",
    require_signed_guard: bool = False,
    watch: bool = False,
    watch_interval: float = 2.0,
    cors_origins: Sequence[str] = (),
) -> int:
    """Run the gateway until SIGINT/SIGTERM; in-flight requests finish before the process exits."""
    require("starlette", "serve")
    require("uvicorn", "serve")
    import torch
    import uvicorn

    # Limits are checked before the guard folder and the model are touched.
    if max_concurrency < 1 or max_queue < 0:
        msg = f"--max-concurrency must be >= 1 and --max-queue >= 0 (0: no queue), got {max_concurrency} and {max_queue}."
        raise ConfigurationError(msg)
    if request_timeout is not None and not (math.isfinite(request_timeout) and request_timeout > 0):
        msg = f"--request-timeout must be a positive number of seconds, got {request_timeout}."
        raise ConfigurationError(msg)
    if torch_threads is not None and torch_threads < 1:
        msg = f"--torch-threads must be >= 1, got {torch_threads}."
        raise ConfigurationError(msg)
    if max_body_bytes is not None and max_body_bytes < 1:
        msg = f"--max-body-bytes must be >= 1 (default 1 MiB), got {max_body_bytes}."
        raise ConfigurationError(msg)
    if not shutdown_timeout >= 0:  # NaN too
        msg = f"--shutdown-timeout must be >= 0 seconds, got {shutdown_timeout}."
        raise ConfigurationError(msg)
    if not math.isfinite(watch_interval) or watch_interval <= 0:
        msg = f"--watch-interval must be a positive number of seconds, got {watch_interval}."
        raise ConfigurationError(msg)
    if vllm_url is not None and not vllm_url.startswith(("http://", "https://")):
        msg = f"--vllm-url must be the server's http:// or https:// address, got {vllm_url!r}."
        raise ConfigurationError(msg)
    # In front of vLLM the gateway's torch work is the guard's encoder on one short text: one
    # intra-op thread per request is fastest, and several requests run in parallel threads.
    # Measured on a busy 2-core machine: 19 ms per decision with 1 thread, 720 ms with 2.
    threads = torch_threads if torch_threads is not None else (1 if vllm_url else None)
    if threads is not None:
        torch.set_num_threads(threads)

    from .app import DEFAULT_MAX_BODY_BYTES, Gateway, GatewaySettings
    from .auth import check_keys, load_keys
    from .reload import GuardWatcher

    # Checked (a string would be split into letters), with ECO_API_KEYS added as eco serve does.
    api_keys = load_keys(check_keys(api_keys))
    settings = GatewaySettings(  # checks its own values (the CORS origins, the keys)
        model_id=model_id,
        max_body_bytes=max_body_bytes or DEFAULT_MAX_BODY_BYTES,
        max_concurrency=max_concurrency,
        max_queue=max_queue,
        request_timeout=request_timeout,
        api_keys=tuple(api_keys),
        cors_origins=tuple(cors_origins),
    )
    if not (Path(guard) / "manifest.json").is_file():
        msg = f"{guard} is not a guard folder (no manifest.json); fit one with `eco guard fit ... --out DIR`."
        raise InvalidInputError(msg)
    check_exposure(host, api_keys, allow_unauthenticated)
    if require_signed_guard:
        from .._integrity import GUARD_KEY_ENV, signing_key

        if signing_key() is None:
            msg = f"--require-signed-guard needs {GUARD_KEY_ENV} set to the key the guard folder was saved with."
            raise ConfigurationError(msg)
        # With the key set, Guard.load accepts only a folder whose HMAC matches it (reloads too).
    # Load in the background: /health answers at once, /ready turns 200 when the model is in.
    gateway = Gateway(
        lambda: build_engine(
            guard, model=model, vllm_url=vllm_url, mode=mode, on_guard_error=on_guard_error
        ),
        settings=settings,
    )
    watcher = GuardWatcher(gateway, guard, interval=watch_interval if watch else None)
    watcher.start()
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda signum, frame: watcher.poke())
    configure_access_log()
    config = uvicorn.Config(
        gateway.app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,  # our access line carries the decision; uvicorn's would duplicate it
        # uvicorn waits this long with asyncio (a float works); its annotation says int.
        timeout_graceful_shutdown=shutdown_timeout,  # type: ignore[arg-type]
        timeout_keep_alive=30,
        lifespan="on",
        interface="asgi3",
    )
    server = _DrainingServer(config, gateway)
    gateway.on_load_error = lambda error: server.stop()
    keys = (
        f"{len(api_keys)} API key(s) required"
        if api_keys
        else "NO API KEY: anyone who reaches the port can use it"
    )
    watching = f"; watching {guard} every {watch_interval} s" if watch else ""
    print(
        f"eco serve: listening on http://{host}:{port} (backend: {vllm_url or 'transformers'}; {keys}{watching})",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.run()
    finally:
        _finish_generation_threads(timeout=10.0)
    if gateway.state.engine is None and gateway.state.load_error:
        # A guard or model that does not load will not load on the next request either: exit,
        # so that a supervisor sees it (the traceback is in the log above).
        print(f"eco serve: error: loading failed: {gateway.state.load_error}", file=sys.stderr)
        return 1
    return 0


def _finish_generation_threads(timeout: float) -> None:
    """Let cancelled generations reach their next token before the interpreter exits.

    Requests cut by the shutdown timeout have their cancel event set and stop at the next token;
    an interpreter that exited under a thread still inside torch would abort the process.
    """
    import threading
    import time

    deadline = time.monotonic() + timeout
    workers = [t for t in threading.enumerate() if t.name in ("eco-generate", "eco-stream")]
    for thread in workers:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in workers if t.is_alive()]
    if stuck:
        # A backend call that ignores cancellation (a vLLM request already sent): leave without
        # waiting for it rather than hang or abort.
        log.warning("exiting with %d generation thread(s) still running", len(stuck))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


class _DrainingServer:
    """uvicorn's server, telling the gateway to stop reporting ready as soon as a signal arrives."""

    def __init__(self, config: Any, gateway: Any) -> None:
        import uvicorn

        gateway_ref = gateway

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: Any) -> None:
                gateway_ref.begin_shutdown()
                super().handle_exit(sig, frame)

        self._server = Server(config)

    def run(self) -> None:
        self._server.run()

    def stop(self) -> None:
        """Shut down as on SIGTERM (from any thread)."""
        self._server.should_exit = True


def check_exposure(host: str, api_keys: Sequence[str], allow_unauthenticated: bool) -> None:
    """Without keys, bind loopback only, unless the operator says so explicitly."""
    if api_keys or allow_unauthenticated or _is_loopback(host):
        return
    msg = (
        f"Refusing to serve on {host} without an API key: anyone who reaches the port could use the model. "
        "Give --api-key / --api-key-file (or ECO_API_KEYS), bind 127.0.0.1, or pass --allow-unauthenticated."
    )
    raise ConfigurationError(msg)


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_serve(args: argparse.Namespace) -> int:
    from .auth import load_keys

    # uvicorn handles SIGTERM while it serves, then re-raises the signal once it has drained;
    # this handler turns that (and a SIGTERM before it starts) into a clean exit status 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    return serve(
        args.guard,
        host=args.host,
        port=args.port,
        model=args.model,
        vllm_url=args.vllm_url,
        mode=args.mode,
        model_id=args.model_id,
        max_body_bytes=args.max_body_bytes,
        max_concurrency=args.max_concurrency,
        shutdown_timeout=args.shutdown_timeout,
        torch_threads=args.torch_threads,
        api_keys=load_keys(args.api_key or (), args.api_key_file or ()),
        allow_unauthenticated=args.allow_unauthenticated,
        max_queue=args.max_queue,
        request_timeout=args.request_timeout,
        on_guard_error=args.on_guard_error,
        require_signed_guard=args.require_signed_guard,
        watch=args.watch,
        watch_interval=args.watch_interval,
        cors_origins=args.cors_origin or (),
    )


def _exit_cleanly(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--guard", required=True, help="guard folder (its policy.json, if any, is used too)"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: loopback only)"
    )
    parser.add_argument("--port", type=port_number, default=8080)
    parser.add_argument(
        "--model",
        default=None,
        help="model folder or hub id (default: embedded SmolLM2); with --vllm-url, the safetensors folder the vLLM server loaded",
    )
    parser.add_argument(
        "--vllm-url",
        default=None,
        help="forward to this vLLM server (started with --enable-prompt-embeds) instead of running the model here",
    )
    parser.add_argument(
        "--model-id",
        default=None,
        help="the name clients send as `model` (default: the model's name)",
    )
    parser.add_argument("--mode", default="enforce", choices=["enforce", "shadow", "off"])
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=None,
        help="larger request bodies get 413 (default 1 MiB)",
    )
    parser.add_argument(
        "--max-concurrency",
        type=int,
        default=64,
        help="requests generating at once; the rest queue",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        help="seconds in-flight requests get to finish after SIGTERM",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: 1 with --vllm-url, else torch's default)",
    )
    parser.add_argument(
        "--api-key",
        action="append",
        help="accepted `Authorization: Bearer` key (repeatable; also ECO_API_KEYS, comma-separated)",
    )
    parser.add_argument(
        "--api-key-file", action="append", help="file with one accepted key per line (repeatable)"
    )
    parser.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="serve without keys on a non-loopback --host",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=256,
        help="requests waiting for a slot; beyond it 429 with Retry-After",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=None,
        help="seconds per request; past it generation is cancelled and the client gets 504",
    )
    parser.add_argument(
        "--on-guard-error",
        default="fail",
        choices=["fail", "corrupt"],
        help="when the guard raises or scores NaN: refuse the request with 500 (default) or answer it corrupted",
    )
    parser.add_argument(
        "--require-signed-guard",
        action="store_true",
        help="refuse to start unless ECO_GUARD_KEY is set (the guard must carry its HMAC)",
    )
    parser.add_argument(
        "--watch",
        action="store_true",
        help="reload the guard folder when it changes (SIGHUP reloads at once either way)",
    )
    parser.add_argument(
        "--watch-interval",
        type=float,
        default=2.0,
        help="seconds between checks of the guard folder with --watch",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        help="a browser origin (https://app.example.com, or *) allowed to call the API from a web page (repeatable; default: none)",
    )
    parser.set_defaults(func=cmd_serve)


def register(subparsers: Any) -> None:
    """Add ``serve`` to the ``eco`` command line."""
    add_arguments(
        subparsers.add_parser(
            "serve", help="OpenAI-compatible HTTP gateway applying a guard to every request"
        )
    )

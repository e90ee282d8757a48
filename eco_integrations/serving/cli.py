"""The ``eco serve`` command: the OpenAI-compatible ECO gateway.

:func:`register` is called by ``eco_integrations.cli.build_parser`` with the top-level
subparsers.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from ..exceptions import InvalidInputError, require

log = logging.getLogger(__name__)


def build_engine(guard: str | os.PathLike[str], *, model: str | None = None, vllm_url: str | None = None, mode: str = "enforce") -> Any:
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
    return ECO(backend, loaded, policy=policy, mode=mode)  # type: ignore[arg-type]


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
) -> int:
    """Run the gateway until SIGINT/SIGTERM; in-flight requests finish before the process exits."""
    require("starlette", "serve")
    require("uvicorn", "serve")
    import torch
    import uvicorn

    # In front of vLLM the gateway's torch work is the guard's encoder on one short text: one
    # intra-op thread per request is fastest, and several requests run in parallel threads.
    # Measured on a busy 2-core machine: 19 ms per decision with 1 thread, 720 ms with 2.
    threads = torch_threads if torch_threads is not None else (1 if vllm_url else None)
    if threads is not None:
        torch.set_num_threads(threads)

    from .app import DEFAULT_MAX_BODY_BYTES, Gateway, GatewaySettings

    if not (Path(guard) / "manifest.json").is_file():
        msg = f"{guard} is not a guard folder (no manifest.json); fit one with `eco guard fit ... --out DIR`."
        raise InvalidInputError(msg)
    settings = GatewaySettings(model_id=model_id, max_body_bytes=max_body_bytes or DEFAULT_MAX_BODY_BYTES, max_concurrency=max_concurrency)
    # Load in the background: /health answers at once, /ready turns 200 when the model is in.
    gateway = Gateway(lambda: build_engine(guard, model=model, vllm_url=vllm_url, mode=mode), settings=settings)
    configure_access_log()
    config = uvicorn.Config(
        gateway.app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,  # our access line carries the decision; uvicorn's would duplicate it
        timeout_graceful_shutdown=shutdown_timeout,
        timeout_keep_alive=30,
        lifespan="on",
    )
    server = _DrainingServer(config, gateway)
    print(f"eco serve: listening on http://{host}:{port} (backend: {vllm_url or 'transformers'})", file=sys.stderr, flush=True)
    server.run()
    return 0


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


def cmd_serve(args: argparse.Namespace) -> int:
    # uvicorn handles SIGTERM while it serves, then re-raises the signal once it has drained;
    # this handler turns that (and a SIGTERM before it starts) into a clean exit status 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    return serve(
        args.guard, host=args.host, port=args.port, model=args.model, vllm_url=args.vllm_url, mode=args.mode,
        model_id=args.model_id, max_body_bytes=args.max_body_bytes, max_concurrency=args.max_concurrency,
        shutdown_timeout=args.shutdown_timeout, torch_threads=args.torch_threads,
    )


def _exit_cleanly(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--guard", required=True, help="guard folder (its policy.json, if any, is used too)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--model", default=None, help="model folder or hub id (default: embedded SmolLM2); with --vllm-url, the safetensors folder the vLLM server loaded")
    parser.add_argument("--vllm-url", default=None, help="forward to this vLLM server (started with --enable-prompt-embeds) instead of running the model here")
    parser.add_argument("--model-id", default=None, help="the name clients send as `model` (default: the model's name)")
    parser.add_argument("--mode", default="enforce", choices=["enforce", "shadow", "off"])
    parser.add_argument("--max-body-bytes", type=int, default=None, help="larger request bodies get 413 (default 1 MiB)")
    parser.add_argument("--max-concurrency", type=int, default=64, help="requests generating at once; the rest queue")
    parser.add_argument("--shutdown-timeout", type=float, default=30.0, help="seconds in-flight requests get to finish after SIGTERM")
    parser.add_argument("--torch-threads", type=int, default=None, help="torch intra-op threads (default: 1 with --vllm-url, else torch's default)")
    parser.set_defaults(func=cmd_serve)


def register(subparsers: Any) -> None:
    """Add ``serve`` to the ``eco`` command line."""
    add_arguments(subparsers.add_parser("serve", help="OpenAI-compatible HTTP gateway applying a guard to every request"))

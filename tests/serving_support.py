"""Start and stop servers for the serving tests: loopback only, bounded waits, always stopped."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A port the OS just handed out on loopback (closed again; the server binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A server subprocess whose stdout and stderr go to ``log``; ``stop()`` always reaps it."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        port: int,
        log: Path,
        ready_path: str = "/ready",
        env: dict[str, str] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.port = port
        self.log = log
        self.ready_path = ready_path
        self.env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, *, timeout: float) -> ServerProcess:
        handle = self.log.open("wb")
        # A new session: stop() signals the server and any workers it forked, nothing else.
        self.proc = subprocess.Popen(
            self.argv, stdout=handle, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        handle.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                msg = f"{self.argv[:4]} exited with {self.proc.returncode} before it was ready:\n{self.tail()}"
                raise RuntimeError(msg)
            try:
                if httpx.get(self.url + self.ready_path, timeout=2.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1.0)
        self.stop()
        msg = f"{self.argv[:4]} was not ready after {timeout:.0f} s:\n{self.tail()}"
        raise RuntimeError(msg)

    def terminate(self) -> None:
        """SIGTERM to the server alone (a graceful shutdown)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self, *, grace: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with _suppress_lookup():
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with _suppress_lookup():
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def json_lines(self) -> list[dict[str, Any]]:
        """The JSON objects the server logged, one per line (other lines skipped)."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out


class _suppress_lookup:  # noqa: N801 - used like contextlib.suppress
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is ProcessLookupError


def gateway_argv(guard: Path, port: int, *extra: str) -> list[str]:
    """``eco serve`` as a module run by this interpreter (the venv under test)."""
    return [
        sys.executable,
        "-m",
        "eco_integrations",
        "serve",
        "--guard",
        str(guard),
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        *extra,
    ]


# The vLLM test server's --max-model-len: below SmolLM2's 8192, so a backend that read the
# model config instead of the server would be caught.
SERVED_MAX_MODEL_LEN = 2048


def vllm_argv(model_folder: Path, port: int, *extra: str) -> list[str]:
    """vLLM's OpenAI server on loopback over ``model_folder``, with prompt embeddings on, in the
    settings this CPU needs (float32, eager, 30% of memory for the KV cache)."""
    return [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_folder),
        *extra,
        "--enable-prompt-embeds",
        "--dtype",
        "float32",
        "--gpu-memory-utilization",
        "0.3",
        "--enforce-eager",
        "--host",
        LOOPBACK,
        "--port",
        str(port),
    ]

"""The gateway in front of a real vLLM server that is killed mid-stream and started again.

The client gets a clean error event and the stream ends; ``/ready`` turns 503 while vLLM is
down and 200 once it is back, and requests succeed again without restarting the gateway.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
from serving_support import ServerProcess, free_port, gateway_argv, vllm_argv

MODEL = "SmolLM2-135M-Instruct"


def _vllm(model_folder: Path, port: int, log: Path) -> ServerProcess:
    argv = vllm_argv(model_folder, port, "--served-model-name", MODEL)
    return ServerProcess(argv, port=port, log=log, ready_path="/health")


def _ready(url: str, status: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/ready", timeout=5).status_code == status:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def test_vllm_killed_mid_stream_then_back(model_folder: Path, hp_guard, tmp_path: Path) -> None:
    guard_dir = tmp_path / "guard"
    hp_guard.save(guard_dir)
    vllm_port = free_port()
    upstream = _vllm(model_folder, vllm_port, tmp_path / "vllm-1.log").start(timeout=900)
    port = free_port()
    gateway = ServerProcess(
        gateway_argv(
            guard_dir,
            port,
            "--vllm-url",
            upstream.url,
            "--model",
            str(model_folder),
            "--model-id",
            MODEL,
        ),
        port=port,
        log=tmp_path / "gateway.log",
    )
    second = None
    try:
        gateway.start(timeout=300)
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Write a long story about a lighthouse."}],
            "max_tokens": 400,
            "temperature": 0,
            "stream": True,
        }
        events: list[str] = []
        with (
            httpx.Client(timeout=120) as http,
            http.stream("POST", gateway.url + "/v1/chat/completions", json=body) as response,
        ):
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                if len(events) == 4:
                    assert upstream.proc is not None
                    os.killpg(upstream.proc.pid, signal.SIGKILL)  # vLLM dies mid-stream
        assert events[-1] != "[DONE]"
        error = json.loads(events[-1])["error"]
        assert error["code"] == "upstream_error" and error["type"] == "server_error"
        assert _ready(gateway.url, 503, 30)
        second = _vllm(model_folder, vllm_port, tmp_path / "vllm-2.log").start(timeout=900)
        assert _ready(gateway.url, 200, 60)
        answer = httpx.post(
            gateway.url + "/v1/chat/completions",
            timeout=300,
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": "What is the capital of France?"}],
                "max_tokens": 8,
                "temperature": 0,
            },
        )
        assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"]
    finally:
        gateway.stop()
        upstream.stop()
        if second is not None:
            second.stop(grace=60)

"""What the gateway's unit tests share: the engine they serve, request bodies, log and SSE readers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from eco_integrations import ECO, CorruptionConfig, ECOPolicy
from eco_integrations.backends import Backend
from eco_integrations.guard import Guard

MODEL = "tiny"
FLAGGED = "Who is Harry Potter?"
BENIGN = "How do I bake bread?"


def gateway_engine(backend: Backend, guard: Guard) -> ECO:
    """The tiny model and toy guard, with noise strong enough to change a flagged answer."""
    return ECO(
        backend,
        guard,
        policy=ECOPolicy(
            corruption=CorruptionConfig(name="rand_noise_first_n", dims=8, strength=50.0)
        ),
    )


def chat_request(content: str = BENIGN, *, max_tokens: int = 6, **extra: Any) -> dict[str, Any]:
    """A greedy ``/v1/chat/completions`` body with one user turn."""
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
        **extra,
    }


def access_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The gateway's JSON access-log lines captured so far."""
    return [
        json.loads(r.getMessage())
        for r in caplog.records
        if r.name == "eco_integrations.serving.access"
    ]


def sse_events(text: str) -> list[Any]:
    """The ``data:`` frames of a server-sent-events body, JSON-decoded (``[DONE]`` kept as is)."""
    frames = [line[len("data: ") :] for line in text.split("\n\n") if line.startswith("data: ")]
    return [frame if frame == "[DONE]" else json.loads(frame) for frame in frames]

"""Faults behind the gateway: a vLLM upstream that dies mid-stream, goes down and comes back, or
is slower than the request deadline.

The upstream is scripted at the HTTP layer (an ``httpx.MockTransport`` under the real
``RemoteTransport``), so the gateway's vLLM code path runs unchanged; the same faults against a
real vLLM server need the vLLM environment (``tests/vllm_tests``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

pytest.importorskip(
    "starlette", reason="pip install 'eco-integrations[serve]' to run the gateway tests"
)
from gateway_support import BENIGN, MODEL, chat_request, sse_events
from starlette.testclient import TestClient

from eco_integrations import ECO, CorruptionConfig, ECOPolicy
from eco_integrations.backends.vllm import EmbeddingTable, RemoteTransport, VLLMBackend
from eco_integrations.serving.app import Gateway, GatewaySettings


class Upstream:
    """A scripted vLLM server: ``mode`` is "ok", "die mid-stream", "down" or "slow"."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.aborted = 0

    def _events(self) -> Iterator[bytes]:
        for i in range(6):
            if self.mode == "slow":
                time.sleep(0.5)
            yield (
                b"data: "
                + json.dumps({"choices": [{"text": f" w{i}", "finish_reason": None}]}).encode()
                + b"\n\n"
            )
            if self.mode == "die mid-stream" and i == 1:
                raise httpx.ReadError("connection reset by peer")
        yield b"data: [DONE]\n\n"

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.mode == "down":
            raise httpx.ConnectError("connection refused")
        if request.url.path == "/health":
            return httpx.Response(200)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": MODEL}]})
        body = json.loads(request.content)
        if body.get("stream"):
            return httpx.Response(
                200,
                headers={"content-type": "text/event-stream"},
                stream=_Stream(self._events(), self),
            )
        if self.mode == "slow":
            time.sleep(3.0)
        return httpx.Response(
            200,
            json={
                "choices": [{"text": " an answer", "finish_reason": "length"}],
                "usage": {"completion_tokens": 2},
            },
        )


class _Stream(httpx.SyncByteStream):
    def __init__(self, chunks: Iterator[bytes], upstream: Upstream) -> None:
        self._chunks, self._upstream = chunks, upstream

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks

    def close(self) -> None:
        self._upstream.aborted += 1  # vLLM aborts a request whose connection closes


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
def gateway(upstream: Upstream, tiny_model, tiny_tokenizer, toy_guard) -> Gateway:
    client = httpx.Client(
        base_url="http://vllm.test", transport=httpx.MockTransport(upstream.handle)
    )
    transport = RemoteTransport("http://vllm.test", model=MODEL, client=client)
    table = EmbeddingTable(tiny_model.get_input_embeddings().weight.detach().clone(), name=MODEL)
    backend = VLLMBackend(transport, tiny_tokenizer, table, model_name=MODEL, context_window=256)
    engine = ECO(
        backend,
        toy_guard,
        policy=ECOPolicy(
            corruption=CorruptionConfig(name="rand_noise_first_n", dims=8, strength=50.0)
        ),
    )
    return Gateway(
        engine, settings=GatewaySettings(model_id=MODEL, default_max_tokens=6, request_timeout=1.0)
    )


def test_upstream_killed_mid_stream_ends_the_stream_with_an_error_event(
    gateway: Gateway, upstream: Upstream
) -> None:
    with TestClient(gateway.app) as client:
        assert (
            client.post("/v1/chat/completions", json=chat_request(BENIGN, stream=True)).status_code
            == 200
        )
        upstream.mode = "die mid-stream"
        response = client.post("/v1/chat/completions", json=chat_request(BENIGN, stream=True))
        events = sse_events(response.text)
        assert response.status_code == 200  # headers went out before the upstream died
        text = "".join(
            e["choices"][0]["delta"].get("content", "")
            for e in events
            if isinstance(e, dict) and e.get("choices")
        )
        assert text == " w0 w1"
        assert (
            events[-1]["error"]["code"] == "upstream_error"
            and "mid-stream" in events[-1]["error"]["message"]
        )
        assert "[DONE]" not in events  # the stream ends on the error, it does not pretend to finish
        upstream.mode = "ok"
        assert client.post("/v1/chat/completions", json=chat_request(BENIGN)).status_code == 200
        assert gateway.admission.running == 0
        metrics = client.get("/metrics").text
    # The failed stream sent 200 headers, but it is counted as the failure it ended with.
    assert 'eco_requests_total{route="/v1/chat/completions",status="200"} 2.0' in metrics
    assert 'eco_requests_total{route="/v1/chat/completions",status="503"} 1.0' in metrics


def test_ready_turns_503_while_the_upstream_is_down_and_recovers(
    gateway: Gateway, upstream: Upstream
) -> None:
    with TestClient(gateway.app) as client:
        assert client.get("/ready").status_code == 200
        upstream.mode = "down"
        assert client.get("/ready").status_code == 503
        down = client.post("/v1/chat/completions", json=chat_request(BENIGN))
        assert down.status_code == 503 and down.json()["error"]["code"] == "upstream_error"
        upstream.mode = "ok"
        assert client.get("/ready").status_code == 200
        assert client.post("/v1/chat/completions", json=chat_request(BENIGN)).status_code == 200


def test_upstream_slower_than_the_deadline(gateway: Gateway, upstream: Upstream) -> None:
    upstream.mode = "slow"
    with TestClient(gateway.app) as client:
        started = time.monotonic()
        response = client.post("/v1/chat/completions", json=chat_request(BENIGN))
        assert response.status_code == 504 and response.json()["error"]["code"] == "timeout"
        assert time.monotonic() - started < 2.5  # the deadline (1 s), not the upstream's 3 s
        streamed = client.post("/v1/chat/completions", json=chat_request(BENIGN, stream=True))
        events = sse_events(streamed.text)
        assert events[-1]["error"]["code"] == "timeout"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and upstream.aborted < 1:
            time.sleep(0.1)
        assert upstream.aborted >= 1  # the upstream stream was closed: vLLM aborts that request
        metrics = client.get("/metrics").text
    assert 'eco_requests_total{route="/v1/chat/completions",status="504"} 2.0' in metrics
    assert 'status="200"' not in metrics.split("eco_requests_total", 1)[1].split("# HELP", 1)[0]


def test_a_server_started_with_a_shorter_max_model_len_sets_the_window(
    tiny_model_dir, toy_guard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vLLM refuses prompt + max_tokens past its ``--max-model-len``; the gateway must refuse
    such a request itself (400, the lengths named), not pass vLLM's refusal on as a 502."""
    served_len = 40
    upstream = Upstream()
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": MODEL, "max_model_len": served_len}]})
        return upstream.handle(request)

    real_client = httpx.Client
    monkeypatch.setattr(
        httpx,
        "Client",
        lambda **kwargs: real_client(**{**kwargs, "transport": httpx.MockTransport(handle)}),
    )
    backend = VLLMBackend.from_server("http://vllm.test", model=str(tiny_model_dir))
    assert backend.context_window == served_len  # the tiny model's own config allows far more
    assert seen.count("/v1/models") == 1  # the model id and the length from one listing
    gateway = Gateway(
        ECO(backend, toy_guard), settings=GatewaySettings(model_id=MODEL, default_max_tokens=6)
    )
    with TestClient(gateway.app) as client:
        seen.clear()
        long = client.post("/v1/chat/completions", json=chat_request("tell me about bread " * 12))
        assert long.status_code == 400, long.text
        assert str(served_len) in long.json()["error"]["message"]
        assert "/v1/completions" not in seen  # refused before anything was sent upstream
        assert client.post("/v1/chat/completions", json=chat_request("bread?")).status_code == 200

    # A server that does not list the length (or an unknown one) leaves the model's own window.
    monkeypatch.setattr(
        httpx,
        "Client",
        lambda **kwargs: real_client(
            **{**kwargs, "transport": httpx.MockTransport(upstream.handle)}
        ),
    )
    from transformers import AutoConfig

    own = AutoConfig.from_pretrained(tiny_model_dir).max_position_embeddings
    assert (
        VLLMBackend.from_server("http://vllm.test", model=str(tiny_model_dir)).context_window == own
    )

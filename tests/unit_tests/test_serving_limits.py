"""The gateway as a platform runs it: cost limits, admission control, cancellation, keys, metrics,
fail-closed guard errors and hostile input, on the tiny random model in process.

Generation is slowed down (a sleep in the tiny model's forward) where a test needs requests to
overlap or outlive a deadline, so each of these finishes in a few seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip(
    "starlette", reason="pip install 'eco-integrations[serve]' to run the gateway tests"
)
pytest.importorskip(
    "prometheus_client", reason="pip install 'eco-integrations[serve]' to run the gateway tests"
)
from gateway_support import BENIGN, FLAGGED, MODEL, access_records, chat_request, gateway_engine
from starlette.testclient import TestClient

from eco_integrations import ECO, GenerationConfig
from eco_integrations.exceptions import ConfigurationError, GuardFailureError, InvalidInputError
from eco_integrations.serving.app import Gateway, GatewaySettings
from eco_integrations.serving.auth import fingerprint


@pytest.fixture
def engine(tiny_backend, toy_guard) -> ECO:
    return gateway_engine(tiny_backend, toy_guard)


KEY = "test-key-0123456789abcdef"


def _settings(**changes: Any) -> GatewaySettings:
    return GatewaySettings(
        **{"model_id": MODEL, "default_max_tokens": 6, "max_tokens_limit": 200, **changes}
    )


def _openai_error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


class SlowModel:
    """Sleeps in every forward pass of the tiny model and counts them, and how many run at once."""

    def __init__(self, model: Any, monkeypatch: pytest.MonkeyPatch, seconds: float = 0.05) -> None:
        self.calls = 0
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()
        original = model.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls += 1
                self.running += 1
                self.most_at_once = max(self.most_at_once, self.running)
            try:
                time.sleep(seconds)
                return original(*args, **kwargs)
            finally:
                with self._lock:
                    self.running -= 1

        monkeypatch.setattr(model, "forward", forward)

    def settled(self, wait: float = 2.0) -> int:
        """The forward count once it stops growing (generation ended)."""
        deadline = time.monotonic() + wait
        last = -1
        while time.monotonic() < deadline:
            if self.calls == last and self.running == 0:
                return last
            last = self.calls
            time.sleep(0.2)
        return self.calls


@pytest.fixture
def slow(tiny_model, monkeypatch: pytest.MonkeyPatch) -> SlowModel:
    return SlowModel(tiny_model, monkeypatch)


async def _asgi(
    app: Any,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    headers: dict[str, str] | None = None,
    disconnect_after: float | None = None,
) -> dict[str, Any]:
    """Drive the ASGI app directly (no client library): the client can leave at a chosen time,
    and each body chunk is timed."""
    sent_body = [False]
    started = time.monotonic()
    out: dict[str, Any] = {"status": None, "chunks": [], "times": []}

    async def receive() -> dict[str, Any]:
        if not sent_body[0]:
            sent_body[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        if disconnect_after is None:
            await asyncio.sleep(3600)
        await asyncio.sleep(max(0.0, disconnect_after - (time.monotonic() - started)))
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
            out["headers"] = {k.decode(): v.decode() for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body" and message.get("body"):
            out["chunks"].append(message["body"])
            out["times"].append(time.monotonic() - started)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", b"application/json"),
            *((k.encode(), v.encode()) for k, v in (headers or {}).items()),
        ],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }
    await app(scope, receive, send)
    out["elapsed"] = time.monotonic() - started
    return out


# -- cost limits and strict types ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "body", "param", "message"),
    [
        (
            "/v1/chat/completions",
            chat_request("hi", stop=[f"s{i}" for i in range(10_000)]),
            "stop",
            "at most 4",
        ),
        ("/v1/chat/completions", chat_request("hi", stop="x" * 65), "stop", "longer than 64"),
        (
            "/v1/completions",
            {"model": MODEL, "prompt": [BENIGN] * 17, "max_tokens": 2},
            "prompt",
            "at most 16",
        ),
        (
            "/v1/chat/completions",
            {"model": MODEL, "messages": [{"role": "user", "content": "hi"}] * 513},
            "messages",
            "at most 512",
        ),
        (
            "/v1/chat/completions",
            chat_request("hi", max_tokens=True),
            "max_tokens",
            "valid integer",
        ),
        ("/v1/chat/completions", chat_request("hi", max_tokens="5"), "max_tokens", "valid integer"),
        ("/v1/chat/completions", chat_request("hi", max_tokens=2.0), "max_tokens", "valid integer"),
        ("/v1/chat/completions", chat_request("hi", stream="yes"), "stream", "valid boolean"),
        ("/v1/chat/completions", chat_request("hi", seed=2**64), "seed", "less than"),
    ],
)
def test_cost_limits_and_strict_types(
    engine: ECO, path: str, body: dict[str, Any], param: str, message: str
) -> None:
    with TestClient(Gateway(engine, settings=_settings()).app) as client:
        error = _openai_error(client.post(path, json=body), 400)
        assert error["param"] == param and message in error["message"]
        assert client.post("/v1/chat/completions", json=chat_request(BENIGN)).status_code == 200


def test_lone_surrogates_and_non_json_constants_are_400(
    engine: ECO, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="eco_integrations.serving.access")
    with TestClient(Gateway(engine, settings=_settings()).app) as client:
        bodies = [
            b'{"model": "tiny", "messages": [{"role": "user", "content": "\\ud800"}]}',
            b'{"model": "tiny", "prompt": "abc \\udfff def"}',
            b'{"model": "\\ud800", "messages": [{"role": "user", "content": "hi"}]}',
            b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
            b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": Infinity}',
            b"[" * 100_000 + b"]" * 100_000,
            b'{"model": "tiny", "messages": [{"role": "user", "content": "caf\xe9"}]}',  # Latin-1, not UTF-8
        ]
        for raw in bodies:
            path = "/v1/completions" if b'"prompt"' in raw else "/v1/chat/completions"
            response = client.post(path, content=raw, headers={"content-type": "application/json"})
            assert _openai_error(response, 400)["code"] in ("invalid_unicode", "invalid_json"), raw[
                :80
            ]
        # A valid surrogate pair (an emoji written as escapes) is fine.
        emoji = b'{"model": "tiny", "messages": [{"role": "user", "content": "hi \\ud83d\\ude00"}], "max_tokens": 2}'
        assert (
            client.post(
                "/v1/chat/completions", content=emoji, headers={"content-type": "application/json"}
            ).status_code
            == 200
        )


def test_engine_refuses_surrogates_and_empty_batches(engine: ECO) -> None:
    with pytest.raises(InvalidInputError, match="lone surrogate"):
        engine.generate(
            [[{"role": "user", "content": "\ud800"}]], config=GenerationConfig(max_new_tokens=2)
        )
    with pytest.raises(InvalidInputError, match="lone surrogate"):
        engine.generate(["abc \udfff"], raw=True, config=GenerationConfig(max_new_tokens=2))
    with pytest.raises(InvalidInputError, match="empty"):
        engine.generate([])


def test_logged_client_strings_are_truncated(engine: ECO, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="eco_integrations.serving.access")
    with TestClient(Gateway(engine, settings=_settings()).app) as client:
        huge = "m" * 500_000
        error = _openai_error(
            client.post("/v1/chat/completions", json={**chat_request("hi"), "model": huge}), 404
        )
        assert len(error["message"]) < 300 and "500000 chars" in error["message"]
    (record,) = access_records(caplog)
    assert len(record["model"]) < 100 and len(json.dumps(record)) < 1000


# -- cancellation, deadlines, admission -------------------------------------------------------------
def test_deadline_cancels_generation_and_answers_504(engine: ECO, slow: SlowModel) -> None:
    gateway = Gateway(engine, settings=_settings(request_timeout=0.5))
    with TestClient(gateway.app) as client:
        started = time.monotonic()
        response = client.post("/v1/chat/completions", json=chat_request(BENIGN, max_tokens=150))
        assert _openai_error(response, 504)["code"] == "timeout" and time.monotonic() - started < 3
        calls = slow.settled()
        assert calls < 60  # 150 tokens at 50 ms each were asked for: generation stopped near 0.5 s
        streamed = client.post(
            "/v1/chat/completions", json=chat_request(BENIGN, max_tokens=150, stream=True)
        )
        events = [line for line in streamed.text.split("\n\n") if line.startswith("data: ")]
        assert (
            json.loads(events[-1][6:])["error"]["code"] == "timeout"
        )  # in-band: headers were sent
        assert slow.settled() - calls < 60
        assert gateway.admission.running == 0


def test_client_leaving_cancels_generation_streaming_or_not(
    engine: ECO, slow: SlowModel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="eco_integrations.serving.access")
    gateway = Gateway(engine, settings=_settings())

    async def leave(stream: bool) -> None:
        before = slow.calls
        out = await _asgi(
            gateway.app,
            "POST",
            "/v1/chat/completions",
            json.dumps(chat_request(BENIGN, max_tokens=150, stream=stream)).encode(),
            disconnect_after=0.4,
        )
        assert out["elapsed"] < 3
        await asyncio.to_thread(slow.settled)
        assert slow.calls - before < 60, (
            f"stream={stream}: generation went on after the client left"
        )
        # The worker thread hands its slot back through the event loop.
        assert await _until(lambda: gateway.admission.running == 0)

    for stream in (False, True):
        asyncio.run(leave(stream))
    assert [r["status"] for r in access_records(caplog)] == [499, 499]


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Wait for ``condition`` on the event loop (a loaded machine may take a while); its last
    value."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return condition()


def test_streams_count_against_the_concurrency_limit(engine: ECO, slow: SlowModel) -> None:
    gateway = Gateway(engine, settings=_settings(max_concurrency=1))
    body = json.dumps(
        {"model": MODEL, "prompt": BENIGN, "max_tokens": 8, "temperature": 0, "stream": True}
    ).encode()

    async def three() -> list[dict[str, Any]]:
        return await asyncio.gather(
            *(_asgi(gateway.app, "POST", "/v1/completions", body) for _ in range(3))
        )

    results = asyncio.run(three())
    assert all(
        r["status"] == 200 and r["chunks"][-1].endswith(b"data: [DONE]\n\n") for r in results
    )
    assert slow.most_at_once == 1
    firsts = sorted(r["times"][0] for r in results)
    assert firsts[2] - firsts[0] > 0.5  # one after another, not all at ~0.4 s


def test_full_queue_gets_429_with_retry_after_and_queued_clients_that_leave_never_run(
    engine: ECO, slow: SlowModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = Gateway(engine, settings=_settings(max_concurrency=1, max_queue=1, retry_after_s=3))
    served = gateway.state.engine
    generated: list[int] = []
    original = served.generate

    def counting(prompts: Any, **kwargs: Any) -> Any:
        generated.append(len(prompts))
        return original(prompts, **kwargs)

    monkeypatch.setattr(served, "generate", counting)
    body = json.dumps(chat_request(BENIGN, max_tokens=20)).encode()

    async def burst() -> list[dict[str, Any]]:
        running = asyncio.ensure_future(_asgi(gateway.app, "POST", "/v1/chat/completions", body))
        assert await _until(lambda: gateway.admission.running == 1)
        queued_then_gone = asyncio.ensure_future(
            _asgi(gateway.app, "POST", "/v1/chat/completions", body, disconnect_after=0.3)
        )
        assert await _until(lambda: gateway.admission.waiting == 1)
        refused = await _asgi(gateway.app, "POST", "/v1/chat/completions", body)
        return [await running, await queued_then_gone, refused]

    running, gone, refused = asyncio.run(burst())
    assert running["status"] == 200 and gone["status"] == 499
    assert refused["status"] == 429 and refused["headers"]["retry-after"] == "3"
    assert json.loads(b"".join(refused["chunks"]))["error"]["code"] == "rate_limit_exceeded"
    assert generated == [1]  # the client that left while queued never reached the model
    assert gateway.admission.running == 0 and gateway.admission.waiting == 0


# -- fail closed -----------------------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["nan score", "guard raises"])
def test_guard_errors_fail_closed_or_corrupt_but_never_pass(
    engine: ECO, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    caplog.set_level(logging.INFO, logger="eco_integrations.serving.access")
    gateway = Gateway(engine, settings=_settings())  # its warm-up decision needs a working guard
    real = engine.guard.decide_many

    def faulty(texts: list[str], **kwargs: Any) -> Any:
        if fault == "guard raises":
            raise RuntimeError("encoder crashed")
        return [
            d.model_copy(update={"score": float("nan"), "flagged": False, "target": None})
            for d in real(texts, **kwargs)
        ]

    monkeypatch.setattr(engine.guard, "decide_many", faulty)
    with pytest.raises(GuardFailureError, match="refused"):
        engine.generate([BENIGN], config=GenerationConfig(max_new_tokens=2))
    with TestClient(gateway.app) as client:
        for stream in (False, True):
            response = client.post("/v1/chat/completions", json=chat_request(BENIGN, stream=stream))
            assert _openai_error(response, 500)["code"] == "guard_failure"
            assert response.headers["x-should-retry"] == "false"  # the SDKs would retry twice
        assert "eco_guard_errors_total 2.0" in client.get("/metrics").text
        gateway.state.engine.on_guard_error = "corrupt"  # eco serve --on-guard-error corrupt
        assert client.post("/v1/chat/completions", json=chat_request(BENIGN)).status_code == 200
        assert "eco_guard_errors_total 3.0" in client.get("/metrics").text
    statuses = [
        (r["status"], r.get("decision", {}).get("corrupted")) for r in access_records(caplog)
    ]
    assert statuses == [(500, None), (500, None), (200, True)]


# -- keys and metrics ------------------------------------------------------------------------------
def test_api_keys(engine: ECO, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="eco_integrations.serving.access")
    with TestClient(
        Gateway(engine, settings=_settings(api_keys=(KEY, "second-key-abcdefghijkl"))).app
    ) as client:
        assert client.get("/health").status_code == 200 and client.get("/ready").status_code == 200
        for headers in (
            {},
            {"authorization": "Bearer wrong-key-0123456789"},
            {"authorization": KEY},
            {"authorization": f"Basic {KEY}"},
        ):
            response = client.post(
                "/v1/chat/completions", json=chat_request(BENIGN), headers=headers
            )
            assert _openai_error(response, 401)["code"] == "invalid_api_key"
            assert response.headers["www-authenticate"] == "Bearer"
        assert (
            client.get("/metrics").status_code == 401
            and client.get("/v1/models").status_code == 401
        )
        good = {"authorization": f"Bearer {KEY}"}
        assert (
            client.post("/v1/chat/completions", json=chat_request(BENIGN), headers=good).status_code
            == 200
        )
        assert client.get("/metrics", headers=good).status_code == 200
    (record,) = access_records(caplog)
    assert record["key"] == fingerprint(KEY) and KEY not in json.dumps(record)


def test_metrics(engine: ECO) -> None:
    with TestClient(Gateway(engine, settings=_settings()).app) as client:
        assert client.post("/v1/chat/completions", json=chat_request(BENIGN)).status_code == 200
        assert client.post("/v1/chat/completions", json=chat_request(FLAGGED)).status_code == 200
        assert (
            client.post("/v1/chat/completions", json=chat_request(FLAGGED, stream=True)).status_code
            == 200
        )
        assert client.post("/v1/chat/completions", json={"model": "x" * 40}).status_code == 400
        client.get("/no/such/" + "p" * 50)
        response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'eco_requests_total{route="/v1/chat/completions",status="200"} 3.0' in text
    assert 'eco_requests_total{route="/v1/chat/completions",status="400"} 1.0' in text
    assert 'eco_requests_total{route="other",status="404"} 1.0' in text
    assert (
        'eco_flagged_total{target="harry-potter"} 2.0' in text
        and 'eco_corrupted_total{target="harry-potter"} 2.0' in text
    )
    assert 'eco_decisions_total{corrupted="false",flagged="false"} 1.0' in text
    assert (
        "eco_guard_decision_seconds_count 3.0" in text
        and "eco_generation_seconds_count 3.0" in text
    )
    assert (
        'eco_tokens_total{direction="in"}' in text
        and "eco_queue_depth 0.0" in text
        and "eco_in_flight 0.0" in text
    )
    assert 'eco_guard_info{guard_id="toyguard0001",guard_version="1"' in text
    for private in ("Harry", "bread", "xxxx", "pppp"):
        assert private not in text


# -- hostile input, property-based -----------------------------------------------------------------
def _hostile_values() -> Any:
    from hypothesis import strategies as st

    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=40),
        st.text(st.characters(exclude_categories=()), max_size=12),  # lone surrogates included
        st.sampled_from(
            ["\x00", "\ud800", " ", "\t\n", "user", "system", "tool", "wizard", MODEL, "x" * 5000]
        ),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
        ),
        max_leaves=12,
    )


@pytest.fixture
def fuzz_client(engine: ECO) -> Iterator[TestClient]:
    with TestClient(
        Gateway(
            engine, settings=_settings(default_max_tokens=2, max_tokens_limit=4, request_timeout=20)
        ).app,
        raise_server_exceptions=False,
    ) as client:
        yield client


def _assert_well_formed(response: Any) -> None:
    assert response.status_code < 500, response.text[:500]
    if response.status_code >= 400:
        _openai_error(response, response.status_code)


def test_fuzz_every_route_never_500(fuzz_client: TestClient) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    fields = {
        "model": st.one_of(st.just(MODEL), _hostile_values()),
        "messages": st.one_of(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "role": st.one_of(
                            st.sampled_from(
                                ["user", "system", "assistant", "tool", "developer", "x"]
                            ),
                            _hostile_values(),
                        ),
                        "content": st.one_of(st.text(max_size=30), _hostile_values()),
                    }
                ),
                max_size=5,
            ),
            _hostile_values(),
        ),
        "prompt": st.one_of(
            st.text(max_size=30), st.lists(st.text(max_size=10), max_size=3), _hostile_values()
        ),
        "max_tokens": st.one_of(st.integers(min_value=-5, max_value=2**40), _hostile_values()),
        "temperature": st.one_of(
            st.floats(min_value=-1, max_value=3, allow_nan=False), _hostile_values()
        ),
        "top_p": _hostile_values(),
        "stop": _hostile_values(),
        "seed": _hostile_values(),
        "n": _hostile_values(),
        "stream": st.one_of(st.booleans(), _hostile_values()),
        "stream_options": _hostile_values(),
        "logprobs": _hostile_values(),
    }
    bodies = st.one_of(st.fixed_dictionaries({}, optional=fields), _hostile_values())

    @settings(
        max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
    )
    @given(path=st.sampled_from(["/v1/chat/completions", "/v1/completions"]), body=bodies)
    def post(path: str, body: Any) -> None:
        raw = (
            json.dumps(body).encode()
            if not isinstance(body, str) or len(body) % 2
            else body.encode("utf-8", "surrogatepass")
        )
        _assert_well_formed(
            fuzz_client.post(path, content=raw, headers={"content-type": "application/json"})
        )

    @settings(
        max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
    )
    @given(
        path=st.one_of(
            st.sampled_from(
                [
                    "/health",
                    "/ready",
                    "/metrics",
                    "/v1/models",
                    "/v1/models/tiny",
                    "/v1/chat/completions",
                ]
            ),
            st.text(alphabet="abc/%.-_~:", max_size=30).map(lambda p: "/" + p),
        ),
        method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
        raw=st.binary(max_size=200),
    )
    def anything(path: str, method: str, raw: bytes) -> None:
        _assert_well_formed(fuzz_client.request(method, path, content=raw))

    post()
    anything()
    big = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}] * 10_000}
    _assert_well_formed(fuzz_client.post("/v1/chat/completions", json=big))
    for content in ("", "   \n\t", "\x00\x00", "a\x00b"):
        _assert_well_formed(fuzz_client.post("/v1/chat/completions", json=chat_request(content)))
    _assert_well_formed(
        fuzz_client.post(
            "/v1/chat/completions",
            content=b"\xff\xfe\xfd",
            headers={"content-type": "application/json"},
        )
    )
    # Still serving a normal request afterwards.
    normal = fuzz_client.post("/v1/chat/completions", json=chat_request(BENIGN, max_tokens=2))
    assert (
        normal.status_code == 200 and normal.json()["choices"][0]["message"]["role"] == "assistant"
    )


def test_fuzz_one_hostile_field_in_an_otherwise_valid_request(fuzz_client: TestClient) -> None:
    """A valid request with one field replaced: the hostile value reaches the deepest code path."""
    from hypothesis import HealthCheck, example, given, settings
    from hypothesis import strategies as st

    chat_fields = [
        "model",
        "messages",
        "content",
        "role",
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "n",
        "stream",
        "stream_options",
        "logprobs",
        "user",
        "max_completion_tokens",
    ]

    @settings(
        max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
    )
    @given(
        chat=st.booleans(),
        field=st.sampled_from([*chat_fields, "prompt", "prompt item"]),
        value=_hostile_values(),
        stream=st.booleans(),
    )
    @example(chat=True, field="content", value="caf\ud800", stream=False)
    @example(chat=True, field="content", value="\udfff", stream=True)
    @example(chat=True, field="model", value="\ud800", stream=False)
    @example(chat=False, field="prompt", value="\ud800 x", stream=False)
    @example(chat=False, field="prompt item", value="\udc00", stream=True)
    @example(chat=True, field="content", value="\x00\x00", stream=False)
    @example(chat=True, field="role", value="wizard", stream=False)
    @example(chat=True, field="max_tokens", value=True, stream=False)
    @example(chat=True, field="stop", value=["s"] * 10_000, stream=False)
    def mutate(chat: bool, field: str, value: Any, stream: bool) -> None:
        body: dict[str, Any] = {"model": MODEL, "max_tokens": 2, "temperature": 0, "stream": stream}
        if chat:
            body["messages"] = [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": BENIGN},
            ]
        else:
            body["prompt"] = BENIGN
        if field in ("content", "role") and chat:
            body["messages"][1][field] = value
        elif field == "prompt item" and not chat:
            body["prompt"] = [BENIGN, value]
        else:
            body[field] = value
        raw = json.dumps(
            body
        ).encode()  # lone surrogates become \ud800 escapes, as a client would send
        response = fuzz_client.post(
            "/v1/chat/completions" if chat else "/v1/completions",
            content=raw,
            headers={"content-type": "application/json"},
        )
        _assert_well_formed(response)
        if response.status_code == 200 and stream:
            assert response.text.rstrip().endswith("data: [DONE]") or '"error"' in response.text

    mutate()
    normal = fuzz_client.post("/v1/chat/completions", json=chat_request(BENIGN, max_tokens=2))
    assert normal.status_code == 200


def test_fail_closed_scores_are_checked_with_numpy_nan(
    engine: ECO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A guard whose arrays were defanged to produce NaN (a non-finite coefficient) is refused per request."""
    estimator = engine.guard.targets["harry-potter"]
    coef = estimator.classifier_.coef_.copy()
    coef[0, 0] = np.nan
    monkeypatch.setattr(estimator.classifier_, "coef_", coef)
    with pytest.raises(GuardFailureError):
        engine.decide(BENIGN)


def test_keys_from_flags_file_and_environment(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from eco_integrations.exceptions import ConfigurationError
    from eco_integrations.serving.auth import KeyChecker, load_keys

    (tmp_path / "keys").write_text(f"# team A\n{KEY}\n\nfile-key-abcdefghijklmnop\n")
    monkeypatch.setenv("ECO_API_KEYS", "env-key-abcdefghijklmnopq, " + KEY)
    keys = load_keys(["flag-key-abcdefghijklmnop"], [tmp_path / "keys"])
    assert keys == (
        "flag-key-abcdefghijklmnop",
        KEY,
        "file-key-abcdefghijklmnop",
        "env-key-abcdefghijklmnopq",
    )
    checker = KeyChecker(keys)
    assert checker.check(f"Bearer {KEY}") == fingerprint(KEY) and checker.check(
        f"bearer  {KEY} "
    ) == fingerprint(KEY)
    assert (
        checker.check(None) is None
        and checker.check(KEY) is None
        and checker.check("Bearer " + KEY[:-1]) is None
    )
    with pytest.raises(ConfigurationError, match="at least 16") as short:
        load_keys(["short"], env=False)
    assert "short" not in str(short.value)  # the message names the key by fingerprint only
    (tmp_path / "empty").write_text("# nobody yet\n\n")
    with pytest.raises(ConfigurationError, match="holds no key"):  # it would serve without keys
        load_keys([], [tmp_path / "empty"], env=False)
    with pytest.raises(ConfigurationError, match="Cannot read the API key file"):
        load_keys([], [tmp_path / "missing"], env=False)


def test_browser_origins_are_opt_in_and_preflights_need_no_key(engine: ECO) -> None:
    app_origin = "https://app.example.com"
    preflight = {
        "origin": app_origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type, x-stainless-os",
    }
    settings = _settings(api_keys=(KEY,), cors_origins=(app_origin,))
    with TestClient(Gateway(engine, settings=settings).app) as client:
        allowed = client.options("/v1/chat/completions", headers=preflight)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == app_origin
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        assert "x-stainless-os" in allowed.headers["access-control-allow-headers"].lower()
        other = client.options(
            "/v1/chat/completions", headers={**preflight, "origin": "https://evil.example"}
        )
        assert other.status_code == 400
        assert "access-control-allow-origin" not in other.headers
        # The request itself still needs a key, and its answer names the origin.
        body = chat_request(BENIGN)
        assert (
            client.post(
                "/v1/chat/completions", json=body, headers={"origin": app_origin}
            ).status_code
            == 401
        )
        answered = client.post(
            "/v1/chat/completions",
            json=body,
            headers={"origin": app_origin, "authorization": f"Bearer {KEY}"},
        )
        assert answered.status_code == 200
        assert answered.headers["access-control-allow-origin"] == app_origin
        assert "x-request-id" in answered.headers["access-control-expose-headers"].lower()
    # Without origins, no CORS headers at all.
    with TestClient(Gateway(engine, settings=_settings()).app) as client:
        plain = client.post("/v1/chat/completions", json=body, headers={"origin": app_origin})
        assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers


@pytest.mark.parametrize(
    "origin",
    ["app.example.com", "https://app.example.com/", "https://app.example.com/v1", "ftp://x"],
)
def test_a_cors_origin_that_is_not_an_origin_is_named(engine: ECO, origin: str) -> None:
    with pytest.raises(ConfigurationError, match=r"is not an origin.*scheme://host"):
        Gateway(engine, settings=_settings(cors_origins=(origin,)))

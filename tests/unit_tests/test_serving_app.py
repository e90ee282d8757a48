"""The gateway's HTTP contract on the tiny random model, in process (Starlette's test client, no sockets).

The integration suite runs the same gateway as a subprocess on the real SmolLM2 with the
``openai`` client; these tests pin status codes, error shapes, the SSE framing, the access log
and the lifecycle (loading, failed load, draining, upstream down) in a few seconds.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip(
    "starlette", reason="pip install 'eco-integrations[serve]' to run the gateway tests"
)
from gateway_support import (
    BENIGN,
    FLAGGED,
    MODEL,
    access_records,
    chat_request,
    gateway_engine,
    sse_events,
)
from starlette.testclient import TestClient

from eco_integrations import ECO, ECOPolicy
from eco_integrations.backends.vllm import BackendUnavailableError
from eco_integrations.serving._wire import engine_error
from eco_integrations.serving.app import Gateway, GatewaySettings


@pytest.fixture
def engine(tiny_backend, toy_guard) -> ECO:
    return gateway_engine(tiny_backend, toy_guard)


def _settings(**changes: Any) -> GatewaySettings:
    return GatewaySettings(model_id=MODEL, default_max_tokens=6, max_tokens_limit=64, **changes)


@pytest.fixture
def gateway(engine: ECO) -> Gateway:
    return Gateway(engine, settings=_settings(max_body_bytes=4000))


@pytest.fixture
def client(gateway: Gateway):
    with TestClient(gateway.app) as test_client:
        yield test_client


@pytest.fixture
def served(gateway: Gateway) -> ECO:
    """The engine the gateway serves (``engine`` with the gateway's reading of every role)."""
    assert gateway.state.engine is not None
    return gateway.state.engine


def test_health_ready_and_models(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert (
        ready.status_code == 200
        and ready.json()["status"] == "ready"
        and ready.json()["policy_version"]
    )
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == [MODEL]
    assert client.get(f"/v1/models/{MODEL}").json()["id"] == MODEL
    missing = client.get("/v1/models/gpt-5")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_chat_completion_and_its_log_line_without_text(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="eco_integrations.serving.access")
    benign = client.post("/v1/chat/completions", json=chat_request(BENIGN))
    flagged = client.post("/v1/chat/completions", json=chat_request(FLAGGED))
    for response in (benign, flagged):
        body = response.json()
        assert (
            response.status_code == 200
            and body["object"] == "chat.completion"
            and body["model"] == MODEL
        )
        assert body["choices"][0]["message"]["role"] == "assistant" and body["choices"][0][
            "finish_reason"
        ] in ("stop", "length")
        usage = body["usage"]
        assert (
            usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
            and usage["completion_tokens"] <= 6
        )
        assert response.headers["x-request-id"] == body["id"]
    records = access_records(caplog)
    assert [r["decision"]["flagged"] for r in records] == [False, True]
    assert [r["decision"]["corrupted"] for r in records] == [False, True]
    assert all(r["status"] == 200 and r["latency_ms"] > 0 for r in records)
    logged = json.dumps(records)
    assert (
        "Harry" not in logged and "bread" not in logged
    )  # decisions and hashes only, never the prompt


def test_benign_answer_through_the_gateway_equals_the_engine(
    client: TestClient, engine: ECO
) -> None:
    body = client.post("/v1/chat/completions", json=chat_request(BENIGN)).json()
    from eco_integrations import GenerationConfig

    direct = engine.generate(
        [[{"role": "user", "content": BENIGN}]],
        config=GenerationConfig(max_new_tokens=6, temperature=0.0),
    )[0]
    assert body["choices"][0]["message"]["content"] == direct.text


def test_text_completions_take_a_list_of_prompts(client: TestClient) -> None:
    response = client.post(
        "/v1/completions",
        json={"model": MODEL, "prompt": [BENIGN, FLAGGED], "max_tokens": 4, "temperature": 0},
    )
    body = response.json()
    assert response.status_code == 200 and body["object"] == "text_completion"
    assert [c["index"] for c in body["choices"]] == [0, 1]
    # Token ids (which the API also takes) are named, with the fix; the guard reads text.
    for ids in ([1, 2, 3], [[1, 2], [3]]):
        refused = client.post(
            "/v1/completions", json={"model": MODEL, "prompt": ids, "max_tokens": 4}
        )
        error = refused.json()["error"]
        assert refused.status_code == 400 and error["param"] == "prompt", error
        assert "token-id prompts" in error["message"] and "as a string" in error["message"]


def test_streaming_chat_matches_the_non_streamed_answer(client: TestClient) -> None:
    whole = client.post("/v1/chat/completions", json=chat_request(BENIGN)).json()["choices"][0][
        "message"
    ]["content"]
    response = client.post(
        "/v1/chat/completions",
        json=chat_request(BENIGN, stream=True, stream_options={"include_usage": True}),
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith(
        "text/event-stream"
    )
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [e for e in events[:-1] if e["choices"]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == whole
    usage = events[-2]["usage"]
    assert (
        events[-2]["choices"] == []
        and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    )


def test_streaming_text_completion(client: TestClient) -> None:
    response = client.post(
        "/v1/completions",
        json={"model": MODEL, "prompt": BENIGN, "max_tokens": 4, "temperature": 0, "stream": True},
    )
    events = sse_events(response.text)
    assert events[-1] == "[DONE]" and all(e["object"] == "text_completion" for e in events[:-1])


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "message"),
    [
        ("/v1/chat/completions", b"{not json", 400, "invalid_json", "not valid JSON"),
        ("/v1/chat/completions", b"[1, 2]", 400, "invalid_json", "must be a JSON object"),
        (
            "/v1/chat/completions",
            {"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]},
            404,
            "model_not_found",
            "does not exist",
        ),
        ("/v1/chat/completions", {"model": MODEL}, 400, "missing_required_parameter", "'messages'"),
        ("/v1/chat/completions", {"model": MODEL, "messages": []}, 400, None, "messages is empty"),
        (
            "/v1/chat/completions",
            {"model": MODEL, "messages": [{"role": "system", "content": "Be brief."}]},
            400,
            None,
            "no non-empty user message to answer",
        ),
        ("/v1/chat/completions", chat_request("hi", n=2), 400, None, "n > 1"),
        (
            "/v1/chat/completions",
            chat_request("hi", tools=[{"type": "function"}]),
            400,
            None,
            "Tool calling",
        ),
        (
            "/v1/chat/completions",
            chat_request("hi", frequency_penalty=0.5),
            400,
            None,
            "frequency_penalty is not supported",
        ),
        (
            "/v1/completions",
            {"model": MODEL, "prompt": "hi", "presence_penalty": -1},
            400,
            None,
            "presence_penalty is not supported",
        ),
        (
            "/v1/chat/completions",
            chat_request("hi", logit_bias={"50256": -100}),
            400,
            None,
            "logit_bias",
        ),
        ("/v1/chat/completions", chat_request("hi", max_tokens=100), 400, None, "at most 64"),
        (
            "/v1/chat/completions",
            chat_request("hi", stream_options={"include_usage": True}),
            400,
            None,
            "only allowed when stream is true",
        ),
        (
            "/v1/chat/completions",
            chat_request("hi", functions=[{"name": "f", "parameters": {}}]),
            400,
            None,
            "Function calling",
        ),
        (
            "/v1/chat/completions",
            chat_request("hi", tool_choice="required"),
            400,
            None,
            "tool_choice needs tools",
        ),
        (
            "/v1/chat/completions",
            chat_request("hi", max_completion_tokens=100),
            400,
            None,
            "max_completion_tokens is 100",
        ),
        (
            "/v1/chat/completions",
            chat_request("hi", stop=""),
            400,
            "invalid_value",
            "Invalid value for 'stop': Stop sequences must be non-empty strings.",
        ),
        (
            "/v1/chat/completions",
            chat_request("hi", temperature=5),
            400,
            "invalid_value",
            "temperature",
        ),
        (
            "/v1/chat/completions",
            {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            400,
            None,
            "non-text",
        ),
        (
            "/v1/chat/completions",
            chat_request("word " * 300),
            400,
            "context_length_exceeded",
            "context window is 256",
        ),
        (
            "/v1/chat/completions",
            chat_request("x" * 5000),
            413,
            "request_too_large",
            "at most 4000",
        ),
        ("/v1/completions", {"model": MODEL, "prompt": "hi", "echo": True}, 400, None, "echo"),
        (
            "/v1/completions",
            {"model": MODEL, "prompt": [BENIGN, FLAGGED], "stream": True},
            400,
            None,
            "one prompt per request",
        ),
    ],
    ids=[
        "invalid-json",
        "not-object",
        "unknown-model",
        "missing-messages",
        "empty-messages",
        "system-only",
        "n",
        "tools",
        "frequency-penalty",
        "presence-penalty",
        "logit-bias",
        "max-tokens",
        "stream-options-without-stream",
        "functions",
        "tool-choice-without-tools",
        "max-completion-tokens",
        "empty-stop",
        "temperature",
        "image",
        "over-long",
        "too-large",
        "echo",
        "stream-many",
    ],
)
def test_bad_requests_get_openai_error_shapes_and_the_server_keeps_serving(
    client: TestClient,
    path: str,
    body: Any,
    status: int,
    code: str | None,
    message: str,
) -> None:
    if isinstance(body, bytes):
        response = client.post(path, content=body, headers={"content-type": "application/json"})
    else:
        response = client.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and message in error["message"]
    if "'stop'" in message:
        assert error["param"] == "stop"  # the field at fault is named
    if "user message" in message:
        assert error["param"] == "messages"
    # Every error carries the request id a client quotes, as a success does.
    if isinstance(body, dict):
        assert response.headers["x-request-id"].startswith(("chatcmpl-", "cmpl-"))
    assert error["code"] == code
    assert client.post("/v1/chat/completions", json=chat_request(BENIGN)).status_code == 200


def test_unknown_path_and_method(client: TestClient) -> None:
    assert client.get("/v1/embeddings").status_code == 404
    wrong = client.get("/v1/chat/completions")
    assert wrong.status_code == 405 and "GET is not allowed" in wrong.json()["error"]["message"]


def test_engine_loads_in_the_background_and_ready_follows(engine: ECO) -> None:
    release = threading.Event()

    def load() -> ECO:
        release.wait(30)
        return engine

    with TestClient(Gateway(load, settings=_settings()).app) as client:
        assert client.get("/health").status_code == 200  # alive while loading
        assert client.get("/ready").json()["status"] == "loading"
        early = client.post("/v1/chat/completions", json=chat_request(BENIGN))
        assert early.status_code == 503 and early.json()["error"]["code"] == "loading"
        release.set()
        deadline = time.monotonic() + 30
        while client.get("/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.post("/v1/chat/completions", json=chat_request(BENIGN)).status_code == 200


def test_failed_load_is_reported_by_health_ready_and_requests() -> None:
    def load() -> ECO:
        raise FileNotFoundError("no guard at /nowhere")

    gateway = Gateway(load, settings=_settings())
    told: list[str] = []
    gateway.on_load_error = told.append  # eco serve stops its server here, and exits 1
    with TestClient(gateway.app) as client:
        deadline = time.monotonic() + 30
        while client.get("/ready").json()["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.05)
        ready = client.get("/ready")
        assert (
            ready.status_code == 503
            and ready.json()["status"] == "failed"
            and "no guard at /nowhere" in ready.json()["error"]
        )
        response = client.post("/v1/chat/completions", json=chat_request(BENIGN))
        assert (
            response.status_code == 503 and "failed to load" in response.json()["error"]["message"]
        )
        # Liveness fails too: no request can recover from it, a restart may.
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "failed"
    assert len(told) == 1 and "no guard at /nowhere" in told[0]


def test_draining_gateway_refuses_new_work(engine: ECO) -> None:
    gateway = Gateway(engine, settings=_settings())
    with TestClient(gateway.app) as client:
        gateway.begin_shutdown()
        assert client.get("/ready").json()["status"] == "draining"
        refused = client.post("/v1/chat/completions", json=chat_request(BENIGN))
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"


def test_upstream_health_and_errors(engine: ECO, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        engine.backend, "transport", SimpleNamespace(healthy=lambda: False), raising=False
    )
    gateway = Gateway(engine, settings=_settings())
    served = gateway.state.engine
    with TestClient(gateway.app) as client:
        assert client.get("/ready").json() == {"status": "upstream unavailable"}

        def unreachable(*args: Any, **kwargs: Any) -> Any:
            raise BackendUnavailableError(
                "vLLM at http://10.0.0.9:8000 refused the connection", status_code=None
            )

        monkeypatch.setattr(served, "generate", unreachable)
        down = client.post("/v1/chat/completions", json=chat_request(BENIGN))
        assert down.status_code == 503 and down.json()["error"]["code"] == "upstream_error"

        def crash(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a bug")

        monkeypatch.setattr(served, "generate", crash)
        bug = client.post("/v1/chat/completions", json=chat_request(BENIGN))
        assert bug.status_code == 500 and bug.json()["error"]["type"] == "server_error"
        assert "a bug" not in bug.text  # internals stay in the gateway log


def test_upstream_status_mapping() -> None:
    assert engine_error(BackendUnavailableError("busy", status_code=429)).status == 503
    assert (
        engine_error(BackendUnavailableError("bad request we built", status_code=400)).status == 502
    )
    assert engine_error(BackendUnavailableError("down", status_code=None)).status == 503


def test_penalties_of_zero_are_what_the_model_does_and_pass(client: TestClient) -> None:
    body = chat_request(BENIGN, frequency_penalty=0, presence_penalty=0.0, logit_bias={})
    assert client.post("/v1/chat/completions", json=body).status_code == 200


def test_vllm_sampling_extensions_are_used_not_dropped(
    client: TestClient, served: ECO, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []
    original = served.generate

    def spy(requests: Any, *, config: Any, **kw: Any) -> Any:
        seen.append(config)
        return original(requests, config=config, **kw)

    monkeypatch.setattr(served, "generate", spy)
    body = chat_request(BENIGN, top_k=5, repetition_penalty=1.3, temperature=0.7)
    assert client.post("/v1/chat/completions", json=body).status_code == 200
    assert (seen[-1].top_k, seen[-1].repetition_penalty) == (5, 1.3)
    # vLLM's "no cut" values mean no cut here too.
    assert (
        client.post("/v1/chat/completions", json=chat_request(BENIGN, top_k=-1)).status_code == 200
    )
    assert seen[-1].top_k is None
    refused = client.post("/v1/chat/completions", json=chat_request(BENIGN, min_p=0.1))
    assert refused.status_code == 400 and "min_p" in refused.json()["error"]["message"]


def test_without_max_tokens_the_answer_gets_the_room_the_window_leaves(engine: ECO) -> None:
    # The default (200 here) does not fit beside a long prompt in the tiny model's 256 tokens.
    settings = GatewaySettings(model_id=MODEL, default_max_tokens=200, max_tokens_limit=250)
    prompt = "word " * 40
    with TestClient(Gateway(engine, settings=settings).app) as client:
        room = 256 - engine.prepare([{"role": "user", "content": prompt}]).prompt_tokens
        assert 0 < room < 200
        # Greedy: the gateway samples at 1.0 by default, and a first token of EOS counts none.
        unlimited = {
            "model": MODEL,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0,
        }
        body = client.post("/v1/chat/completions", json=unlimited).json()
        assert 0 < body["usage"]["completion_tokens"] <= room
        streamed = client.post("/v1/chat/completions", json={**unlimited, "stream": True})
        assert streamed.status_code == 200 and "[DONE]" in streamed.text
        # A limit the client set is kept, and refused when it does not fit.
        asked = client.post("/v1/chat/completions", json={**unlimited, "max_tokens": 200})
        assert asked.status_code == 400
        assert asked.json()["error"]["code"] == "context_length_exceeded"


def test_message_names_and_tool_call_ids_reach_the_template(
    client: TestClient, served: ECO, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []
    original = served.prepare_many
    monkeypatch.setattr(
        served,
        "prepare_many",
        lambda prompts, **kw: seen.extend(prompts) or original(prompts, **kw),
    )
    messages = [
        {"role": "user", "content": BENIGN, "name": "ann"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "content": "flour", "tool_call_id": "c1"},
        {"role": "user", "content": "And then?"},
    ]
    body = {"model": MODEL, "messages": messages, "max_tokens": 2}
    assert client.post("/v1/chat/completions", json=body).status_code == 200
    (chat,) = seen
    assert chat[0]["name"] == "ann" and chat[2]["tool_call_id"] == "c1"


def test_openai_s_own_seed_and_top_p_ranges_are_taken(client: TestClient) -> None:
    def answer(**fields: Any) -> str:
        body = chat_request(BENIGN, max_tokens=4, **fields)
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        return str(response.json()["choices"][0]["message"]["content"])

    # A negative seed is a seed: the same one samples the same answer.
    assert answer(seed=-1, temperature=1.0) == answer(seed=-1, temperature=1.0)
    # top_p 0 keeps the likeliest token only: the greedy answer, whatever the temperature.
    assert answer(top_p=0, temperature=1.5) == answer(temperature=0)


def test_the_gateway_reads_every_message_a_client_writes(
    engine: ECO, caplog: pytest.LogCaptureFixture
) -> None:
    """A client writes the system prompt and the tool results too: a forget question put there
    is read, unless the policy names the roles to read."""
    tool_call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    hidden = {
        "system": [
            {"role": "system", "content": FLAGGED},
            {"role": "user", "content": BENIGN},
        ],
        "tool": [
            {"role": "user", "content": BENIGN},
            {"role": "assistant", "content": None, "tool_calls": [tool_call]},
            {"role": "tool", "content": FLAGGED, "tool_call_id": "c1"},
        ],
        "assistant": [
            {"role": "user", "content": BENIGN},
            {"role": "assistant", "content": FLAGGED},
            {"role": "user", "content": BENIGN},
        ],
    }
    user_only = engine.replace(policy=ECOPolicy(classify_roles=("user",)))
    caplog.set_level(logging.INFO, logger="eco_integrations.serving.access")
    for served, read in ((engine, True), (user_only, False)):
        gateway = Gateway(served, settings=_settings())
        assert gateway.state.engine is not None
        with TestClient(gateway.app) as client:
            ready = client.get("/ready").json()
            assert ready["policy_version"] == gateway.state.engine.policy_version
            for messages in hidden.values():
                body = {"model": MODEL, "messages": messages, "max_tokens": 2, "temperature": 0}
                assert client.post("/v1/chat/completions", json=body).status_code == 200
            # A plain benign question is still the plain model's.
            assert client.post("/v1/chat/completions", json=chat_request(BENIGN)).status_code == 200
        records = access_records(caplog)[-4:]
        flagged = [r["decision"]["flagged"] for r in records]
        # The system prompt is read whatever the window; an older assistant turn is not (window 1).
        assert flagged == ([True, True, False, False] if read else [False] * 4), flagged
    assert engine.policy.classify_roles is None  # the caller's engine is left as it was

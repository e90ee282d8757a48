"""``eco serve`` on the embedded SmolLM2: OpenAI and LangChain clients unchanged, bad input, shutdown.

The gateway runs as a subprocess on loopback (``python -m eco_integrations serve``, the same
code as ``eco serve``); every wait is bounded and every server is stopped.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serving_support import ServerProcess, free_port, gateway_argv

pytestmark = pytest.mark.integration
openai = pytest.importorskip(
    "openai", reason="pip install 'eco-integrations[serve]' openai to run the gateway tests"
)

MODEL = "SmolLM2-135M-Instruct"
FLAGGED = "Who is Harry Potter?"
BENIGN = "What is the capital of France?"
START_TIMEOUT = 600.0


@pytest.fixture(scope="module")
def server(guard_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    port = free_port()
    proc = ServerProcess(
        gateway_argv(guard_dir, port, "--max-body-bytes", "200000"),
        port=port,
        log=tmp_path_factory.mktemp("logs") / "gateway.log",
    )
    proc.start(timeout=START_TIMEOUT)
    yield proc
    proc.stop()


@pytest.fixture
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)


def _chat(client: openai.OpenAI, text: str, **kwargs: object) -> str:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": text}],
        max_tokens=12,
        temperature=0,
        **kwargs,
    )
    assert reply.choices[0].message.role == "assistant"
    return reply.choices[0].message.content or ""


def test_health_ready_and_models(server: ServerProcess, client: openai.OpenAI) -> None:
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/ready").json()
    assert ready["status"] == "ready" and ready["model"] == MODEL
    assert [m.id for m in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_openai_chat_stream_matches_non_stream(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": BENIGN}], max_tokens=12, temperature=0
    )
    assert (
        full.usage is not None
        and full.usage.prompt_tokens > 0
        and 0 < full.usage.completion_tokens <= 12
    )
    text = full.choices[0].message.content
    assert "Paris" in text
    chunks = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": BENIGN}],
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage = [], None
    for chunk in chunks:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(pieces) == text
    assert usage is not None and usage.prompt_tokens == full.usage.prompt_tokens


def test_flagged_prompt_is_answered_from_corrupted_embeddings(
    server: ServerProcess, client: openai.OpenAI
) -> None:
    marker = "Who is Harry Potter? Please answer briefly, friend."
    _chat(client, marker)
    lines = [
        r
        for r in server.json_lines()
        if r.get("event") == "request" and r.get("status") == 200 and not r.get("stream")
    ]
    last = lines[-1]["decision"]
    assert last["flagged"] and last["corrupted"] and last["target"] == "harry-potter"
    # The log carries the decision and a hash, never the words.
    assert marker not in server.log.read_text() and "Harry" not in server.log.read_text()


def test_a_forget_question_in_the_system_prompt_or_a_tool_result_is_read(
    server: ServerProcess, client: openai.OpenAI
) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    conversations = [
        [
            {"role": "system", "content": "Before anything else, tell me who Harry Potter is."},
            {"role": "user", "content": "Go ahead."},
        ],
        [
            {"role": "user", "content": "Summarise what the lookup returned."},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "Who is Harry Potter?"},
        ],
        [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": BENIGN},
        ],
    ]
    for messages in conversations:
        client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4, temperature=0)  # type: ignore[call-overload]
    records = [
        r
        for r in server.json_lines()
        if r.get("event") == "request" and r.get("status") == 200 and not r.get("stream")
    ][-3:]
    assert [r["decision"]["flagged"] for r in records] == [True, True, False]


def test_openai_text_completions(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=6, temperature=0
    )
    assert reply.object == "text_completion" and reply.choices[0].text.strip()
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=MODEL, prompt="The capital of France is", max_tokens=6, temperature=0, stream=True
        )
        if c.choices
    )
    assert streamed == reply.choices[0].text


def test_langchain_chat_openai_works_unchanged(
    server: ServerProcess, client: openai.OpenAI
) -> None:
    langchain_openai = pytest.importorskip(
        "langchain_openai", reason="pip install langchain-openai to run this test"
    )
    llm = langchain_openai.ChatOpenAI(
        base_url=server.url + "/v1",
        api_key="unused",
        model=MODEL,
        max_tokens=12,
        temperature=0,
        max_retries=0,
    )
    answer = llm.invoke(BENIGN)
    assert answer.content == _chat(client, BENIGN)
    assert "".join(str(c.content) for c in llm.stream(BENIGN)) == answer.content


def test_bad_input_gets_the_right_status_and_the_server_keeps_serving(
    server: ServerProcess, client: openai.OpenAI
) -> None:
    url = server.url + "/v1/chat/completions"
    bad_json = httpx.post(url, content=b'{"model": ', headers={"content-type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "invalid_json"
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": BENIGN}]
        )
    missing = httpx.post(url, json={"model": MODEL})
    assert missing.status_code == 400 and missing.json()["error"] == {
        "message": "Missing required parameter: 'messages'.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "missing_required_parameter",
    }
    empty = httpx.post(url, json={"model": MODEL, "messages": []})
    assert (
        empty.status_code == 400 and "at least one user message" in empty.json()["error"]["message"]
    )
    with pytest.raises(openai.BadRequestError) as over_long:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "apple " * 9000}], max_tokens=4
        )
    assert over_long.value.code == "context_length_exceeded" and "context window is 8192" in str(
        over_long.value
    )
    too_big = httpx.post(
        url, json={"model": MODEL, "messages": [{"role": "user", "content": "x" * 300_000}]}
    )
    assert too_big.status_code == 413 and "at most 200000" in too_big.json()["error"]["message"]
    assert httpx.get(server.url + "/v2/nothing").status_code == 404
    assert httpx.get(url).status_code == 405
    assert (
        httpx.post(
            url, json={"model": MODEL, "messages": [{"role": "user", "content": BENIGN}], "n": 2}
        ).status_code
        == 400
    )
    # Still serving after all of it.
    assert "Paris" in _chat(client, BENIGN)


def test_client_disconnecting_mid_stream_cancels_generation(
    server: ServerProcess, client: openai.OpenAI
) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper."}],
        "max_tokens": 400,
        "temperature": 0,
        "stream": True,
    }
    with (
        httpx.Client(timeout=120) as http,
        http.stream("POST", server.url + "/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        events = 0
        for line in response.iter_lines():
            events += line.startswith("data:")
            if events >= 3:
                break  # leaving the block closes the connection mid-stream
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and httpx.get(server.url + "/ready").json()["in_flight"]:
        time.sleep(0.5)
    assert httpx.get(server.url + "/ready").json()["in_flight"] == 0
    streams = [r for r in server.json_lines() if r.get("stream") and r.get("model") == MODEL]
    assert streams[-1]["status"] == 499 and streams[-1]["disconnected"] is True
    # 400 tokens were asked for; a cancelled stream stops long before producing them all.
    assert streams[-1]["latency_ms"] < 60_000
    assert "Paris" in _chat(client, BENIGN)


def test_sigterm_finishes_in_flight_requests(guard_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    # A generous drain window: on a busy 2-core CI machine 24 tokens can take tens of seconds.
    proc = ServerProcess(
        gateway_argv(guard_dir, port, "--shutdown-timeout", "300"),
        port=port,
        log=tmp_path / "gateway.log",
    ).start(timeout=START_TIMEOUT)
    result: dict[str, object] = {}

    def slow_request() -> None:
        response = httpx.post(
            proc.url + "/v1/chat/completions",
            timeout=300,
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": "Count from one to forty in words."}],
                "max_tokens": 24,
                "temperature": 0,
            },
        )
        result["status"] = response.status_code
        result["body"] = response.json()

    try:
        worker = threading.Thread(target=slow_request)
        worker.start()
        deadline = time.monotonic() + 60
        while (
            time.monotonic() < deadline
            and httpx.get(proc.url + "/ready").json().get("in_flight", 0) == 0
        ):
            time.sleep(0.05)
        proc.terminate()
        assert proc.wait(timeout=330) == 0
        worker.join(timeout=60)
        assert result["status"] == 200
        body = result["body"]
        assert isinstance(body, dict) and body["usage"]["completion_tokens"] > 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(proc.url + "/health", timeout=5)
        assert json.dumps(body)  # a complete JSON answer, not a cut-off one
    finally:
        proc.stop()

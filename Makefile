# Two entry points for a new user: `make demo` (install + run the offline demo) and `make test` (install + tests).
# torch is installed first, pinned, so that nothing pulls a multi-GB CUDA build where a CPU build is wanted.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: demo test test-slow lint install install-test

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"

install: $(BIN)/python
	$(BIN)/python -m pip install -q -e .

install-test: $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[test,dev]"

demo: install
	$(BIN)/autogen-memento demo

test: install-test
	$(BIN)/python -m pytest -q

test-slow: install-test
	$(BIN)/python -m pytest -q -m slow

lint: install-test
	$(BIN)/ruff check autogen_ext_memento tests examples serving
	$(BIN)/mypy

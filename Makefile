# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP_CORE := $(VENV)/.installed-core
STAMP_TEST := $(VENV)/.installed-test
MXVENV := .venv-mxnet
STAMP_MX   := $(MXVENV)/.installed

.PHONY: demo test lint typecheck unit bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# compileall: this workplace sets PYTHONDONTWRITEBYTECODE, so byte-compile once at install
# rather than on every start of the CLI.
$(STAMP_CORE): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	$(BIN)/python -m compileall -q src >/dev/null
	touch $@

$(STAMP_TEST): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/python -m compileall -q src >/dev/null
	touch $@ $(STAMP_CORE)

# MXNet 1.9.1 needs numpy<1.24 (TensorFlow needs newer): a second venv for its tests.
$(STAMP_MX): pyproject.toml
	$(PYTHON) -m venv $(MXVENV)
	$(MXVENV)/bin/python -m pip install --quiet --upgrade pip
	$(MXVENV)/bin/pip install --quiet -e '.[test-mxnet]'
	$(MXVENV)/bin/python -m compileall -q src >/dev/null
	touch $@

## demo: seal a small generated model, verify it, tamper one byte, show the refusal
demo: $(STAMP_CORE)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/demo.sh

## test: lint, type-check and run the whole suite (installs the test extras)
test: $(STAMP_TEST) lint typecheck unit

lint: $(STAMP_TEST)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP_TEST)
	$(BIN)/mypy

unit: $(STAMP_TEST) $(STAMP_MX)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q --ignore=tests/mxnet
	PATH="$(CURDIR)/$(MXVENV)/bin:$$PATH" $(MXVENV)/bin/python -m pytest -q tests/mxnet

## bench: build large test models and time modelseal against its peers (minutes, GBs of disk)
bench: $(STAMP_TEST)
	$(BIN)/python -m compileall -q src >/dev/null
	$(BIN)/python bench/make_models.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) $(MXVENV) demo .pytest_cache .mypy_cache .ruff_cache

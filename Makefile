# Two commands do all set-up on a fresh machine (only Python 3.11+ needed):
#   make sandbox   – everything local: embedded PostgreSQL, fake WhatsApp, phone simulator
#   make test      – lint, types and the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: sandbox test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

sandbox: $(STAMP)
	$(BIN)/python -m bot sandbox

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(STAMP) lint
	scripts/ensure-chromium
	scripts/ensure-php
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache

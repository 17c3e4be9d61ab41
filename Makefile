# Quarry — `make run` starts the platform in embedded mode; `make test` runs the test suite.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup run test lint format openapi clean

# The suite loads exactly the pytest plugins it uses, not every one that happens to be
# installed (schemathesis, langsmith and anyio bring their own): besides keeping the suite's
# behaviour ours, pytest rewrites the assertions of every module of an auto-loaded plugin's
# package, which costs seconds per session when bytecode cannot be cached
# (PYTHONDONTWRITEBYTECODE).
#
# It runs in TEST_WORKERS processes (pytest-xdist), a test file at a time each, so that
# module fixtures are built once: most of the suite waits (on the fake LLM's latency, on
# child processes starting, on runs finishing) rather than computes, so two processes
# finish sooner even on two busy cores (here at load 4-5: 280 s, against 325 s in one
# process). Every test is independent of the others
# (own database, queue name, ports and directories). `make test TEST_WORKERS=0` runs it in
# one process; a plain `.venv/bin/pytest` works too (one process, all plugins).
TEST_WORKERS ?= 2
PYTEST := PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 $(BIN)/pytest -p asyncio -p timeout -p hypothesispytest \
	-p xdist --numprocesses=$(TEST_WORKERS) --dist=loadfile

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Quarry needs Python 3.11 (set PYTHON=/path/to/python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $(STAMP)

setup: $(STAMP)

# `make run PORT=8080` (or HOST=0.0.0.0 to listen on every interface).
HOST ?= 127.0.0.1
PORT ?= 8000

run: setup
	$(BIN)/quarry serve --host $(HOST) --port $(PORT)

test: setup
	$(PYTEST)

lint: setup
	$(BIN)/ruff check backend tests benchmarks
	$(BIN)/ruff format --check backend tests benchmarks
	$(BIN)/mypy

format: setup
	$(BIN)/ruff check --fix backend tests benchmarks
	$(BIN)/ruff format backend tests benchmarks

openapi: setup
	$(BIN)/python -m quarry.openapi > contracts/openapi.yaml

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

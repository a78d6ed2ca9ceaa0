# The two commands of the README:
#   make demo   - install into .venv and run the demo marketplace (SQLite file aftersales.db)
#   make test   - install into .venv (with dev tools) and run lint, types and the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test install install-dev lint types bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

install-dev: $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'

demo: install
	$(BIN)/aftersales demo

lint: install-dev
	$(BIN)/ruff check src tests bench

types: install-dev
	$(BIN)/mypy

test: install-dev lint types
	$(BIN)/pytest -n 2 -q

bench: install
	$(BIN)/python bench/lifecycle.py

clean:
	rm -rf $(VENV) evidence aftersales.db aftersales.db-wal aftersales.db-shm .pytest_cache .mypy_cache .ruff_cache

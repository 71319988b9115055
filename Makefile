# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/winnow demo

# Type-checked where it is cheap: the run-directory contract, config, shared helpers and ingest.
TYPED := pipeline/rundir.py pipeline/runner.py pipeline/config.py pipeline/artifacts.py stages/common stages/ingest

lint: $(STAMP)
	$(BIN)/ruff check pipeline stages models tests benchmarks
	$(BIN)/mypy --ignore-missing-imports --follow-imports=silent $(TYPED)

test: lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf runs .pytest_cache .ruff_cache

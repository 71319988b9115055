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
	$(BIN)/python -m pip install --quiet -e '.[test,beam]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/winnow demo

# Type-checked where it is cheap: the run-directory contract, config, shared helpers and ingest.
TYPED := winnow/pipeline/rundir.py winnow/pipeline/runner.py winnow/pipeline/config.py winnow/pipeline/settings.py winnow/pipeline/demo.py winnow/pipeline/artifacts.py winnow/stages/common winnow/stages/ingest

lint: $(STAMP)
	$(BIN)/ruff check winnow tests benchmarks
	$(BIN)/mypy --ignore-missing-imports --follow-imports=silent $(TYPED)

test: lint
	$(BIN)/python -m pytest -q

# The benchmarks take minutes to hours each (CIFAR-10 from ../shared/data); every table in
# benchmarks/<area>/RESULTS.md names the command that made it. This installs what they need
# and rebuilds BENCHMARKS.md from those files.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m benchmarks.collect
	@echo "BENCHMARKS.md rebuilt; run a benchmark with the command above its table, e.g."
	@echo "  $(BIN)/python -m benchmarks.weight.step_time --reps 30 --threads 1"

clean:
	rm -rf runs .pytest_cache .ruff_cache

# Two commands do all set-up on a fresh machine (README): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest test-machine diagram screenshots bench bench-latency reliability clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/gocluster demo

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) test-machine
	$(BIN)/pytest

# PostgreSQL (installed and started when missing), kcat, Chromium, promtool, Java and
# Maven present, Apache Kafka's jars fetched, the AsyncAPI parser installed (npm ci);
# idempotent and quick when all is there.
test-machine:
	bash scripts/ensure-test-machine.sh

diagram: $(STAMP)
	$(BIN)/python -m workflows.diagram > docs/statechart.md

# The dashboard screenshots in docs/ (the README shows them), from the known story.
screenshots: $(STAMP) test-machine
	$(BIN)/python -m tests.office_screenshots

bench: $(STAMP) test-machine
	$(BIN)/python bench/throughput.py

bench-latency: $(STAMP) test-machine
	$(BIN)/python bench/latency.py

reliability: $(STAMP) test-machine
	$(BIN)/python -m reliability

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

# Two commands on a fresh machine: `make run` and `make test`.
# Each creates .venv in the checkout if missing and installs the project with its dev extras.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-unit test-e2e test-reliability clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Run the whole system on the embedded broker with a demo load.
run: $(STAMP)
	$(BIN)/consentry up --demo

## Run the whole test suite (starts the embedded broker it needs; installs chromium for the browser tests).
test: $(STAMP)
	./scripts/ensure-chromium.sh
	$(BIN)/python -m pytest

## The full reliability runs (races, kills, fuzz; see docs/reliability.md), with the tests that
## have one size only (failpoints, fail closed, broker outage, purge/vacuum, compat).
test-reliability: $(STAMP)
	$(BIN)/python -m pytest -m "not quick" --timeout 1500 tests/reliability tests/integration

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

clean:
	rm -rf $(VENV) var .pytest_cache

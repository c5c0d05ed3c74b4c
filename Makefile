# Two commands on a fresh machine: `make run` and `make test`.
# Each creates .venv in the checkout if missing and installs the project with its dev extras,
# at the versions and hashes of requirements/dev.txt (`make lock` re-pins it from pyproject.toml).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-unit test-e2e test-deploy test-reliability clean venv bench bench-scale schemas lock chart

venv: $(STAMP)

# Exactly the versions of the lock (requirements/dev.txt: pyproject's pins and everything they pull
# in, each file checked against its hash), then the project itself without resolving anything.
# The installer is uv (from PyPI, itself locked with hashes in requirements/uv.txt): it downloads
# and installs in parallel, three times faster than pip here.
$(STAMP): pyproject.toml requirements/dev.txt requirements/uv.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/uv.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python --require-hashes -r requirements/dev.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e .
	touch $(STAMP)

## Re-pin requirements/*.txt (with hashes) after changing pyproject.toml; then `make test`.
lock:
	./scripts/lock.sh

## Run the whole system on the embedded broker with a demo load.
run: $(STAMP)
	$(BIN)/consentry up --demo

## Run the whole test suite (starts the embedded broker it needs; installs chromium for the browser
## tests and stunnel, the TLS terminator of the Kafka security tests). Two pytest-xdist workers,
## one test file each at a time, each with its own broker: alone, the suite keeps one core busy.
test: $(STAMP)
	./scripts/ensure-chromium.sh
	./scripts/ensure-stunnel.sh
	$(BIN)/python -m pytest -n 2 --dist loadfile --durations=15

## Measure throughput, latency, purge and memory; prints a table and writes docs/benchmarks.md (16 to 19 min on the 2-core machine: docs/benchmarks.md).
BENCH_STAMP := $(VENV)/.bench-installed
PEER_VENV   := .venv-peer
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

$(PEER_VENV)/.installed: bench/requirements-peer.txt
	test -x $(PEER_VENV)/bin/python || $(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install --quiet -r bench/requirements-peer.txt
	touch $(PEER_VENV)/.installed

bench: $(BENCH_STAMP) $(PEER_VENV)/.installed
	./scripts/ensure-wrk.sh
	$(BIN)/python -m bench

## Scale-out: 1, 2, 4 ingest and 1, 2 consent workers as processes on 32 partitions (a few minutes; bench/scale.py).
bench-scale: $(BENCH_STAMP)
	$(BIN)/python -m bench.scale

## The full reliability runs (races, kills, fuzz; see docs/reliability.md), with the tests that
## have one size only (failpoints, fail closed, broker outage, purge/vacuum, embedded-broker patches).
test-reliability: $(STAMP)
	./scripts/ensure-stunnel.sh
	$(BIN)/python -m pytest -m "not quick" --timeout 1500 tests/reliability tests/integration

## `helm lint` and `helm template` of deploy/helm/consentry, by Helm's own Go SDK (the helm-python-sdk
## wheel: no helm binary needed); tests/deploy/test_helm.py checks the output in `make test`.
chart: $(STAMP)
	$(BIN)/python scripts/helm.py lint deploy/helm/consentry --strict --set keys.existingSecret=consentry-keys
	$(BIN)/python scripts/helm.py template consentry deploy/helm/consentry --set keys.existingSecret=consentry-keys

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

## Check docker-compose.yml, deploy/ and docs/asyncapi.yaml against their schemas and the code (seconds, offline).
test-deploy: $(STAMP)
	$(BIN)/python -m pytest tests/deploy

## Regenerate schemas/ (JSON Schemas of the contract's messages) from consentry/contract.py.
schemas: $(STAMP)
	$(BIN)/consentry schemas

clean:
	rm -rf $(VENV) $(PEER_VENV) var .pytest_cache

# hivepipe: every target installs what it needs (uv) first.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
PYTEST_ARGS ?=

.PHONY: all run test chaos lint fmt bench docs uv sync

all: test

uv:
	@command -v uv >/dev/null 2>&1 || [ -x "$(HOME)/.local/bin/uv" ] || \
		python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet --break-system-packages --user uv

sync: uv
	@$(UV) sync --quiet --frozen 2>/dev/null || $(UV) sync --quiet

## Start the whole pipeline (embedded Kafka, PostgreSQL and MQTT unless HIVEPIPE_* point elsewhere).
run: sync
	$(UV) run hivepipe up

## The test suite against real servers (started privately when none is configured).
test: sync
	$(UV) run pytest -q -p no:cacheprovider $(PYTEST_ARGS)

## Fault injection under load against `hivepipe up`: every fault of tests/chaos/faults.py, then
## the table of accepted, lost, doubled, refused and time to recover (docs/operations.md).
chaos: sync
	HIVEPIPE_CHAOS=full $(UV) run pytest -q -p no:cacheprovider -s tests/chaos $(PYTEST_ARGS)

lint: sync
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy
	$(UV) run lint-imports

fmt: sync
	$(UV) run ruff check --fix .
	$(UV) run ruff format .

## docs/configuration.md from the settings class, docs/asyncapi.json from the topics and their
## schemas (unit tests fail when either is out of date).
docs: sync
	$(UV) run python -m services.entrypoints.config_reference
	$(UV) run python -m services.entrypoints.asyncapi

## Benchmarks (figures land in docs/benchmarks.md).
bench: sync
	$(UV) run python -m bench

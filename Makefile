# Every target does its own set-up: a fresh clone needs only Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO_FILES := $(shell find protos/paysuite -name '*.proto' | sort)
PY_PACKAGES := common payment_service wallet_service gateway_service recovery_worker provider_simulator paysuite_cli bench

.PHONY: help install run bench test test-unit test-integration lint format typecheck protos protos-check clean

help:
	@echo "make run          start the whole suite (embedded PostgreSQL + Redis unless PAYSUITE_*_URL set)"
	@echo "make bench        throughput and latency on a fresh embedded suite (BENCH_ARGS=--quick)"
	@echo "make test         unit + integration tests against real PostgreSQL, Redis and gRPC servers"
	@echo "make lint         ruff check + format check"
	@echo "make typecheck    mypy --strict on our packages"
	@echo "make protos       regenerate protobuf code;  make protos-check  fail if it is stale"

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/paysuite up

# Never part of `make test`: it loads the machine for a few minutes.
bench: $(STAMP)
	$(BIN)/paysuite bench $(BENCH_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests -m "not integration" $(PYTEST_ARGS)

test-integration: $(STAMP)
	$(BIN)/python -m pytest tests -m integration $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP)
	$(BIN)/mypy

protos: $(STAMP)
	$(BIN)/python -m common.protogen protos

protos-check: $(STAMP)
	$(BIN)/python -m common.protogen protos --check

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

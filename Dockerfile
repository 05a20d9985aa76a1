# No `# syntax=` line on purpose: it makes BuildKit fetch a Dockerfile frontend image from a
# registry before building, which fails on a host without one. BuildKit's built-in frontend
# already has everything used here (`RUN --mount=type=cache`, needing Engine 20.10 or newer).
#
# One image for every paysuite process; the process is picked by the module given as the
# container's arguments:
#
#   docker run ghcr.io/paysuite/paysuite:dev payment_service
#   docker run ghcr.io/paysuite/paysuite:dev webhook_adapter
#   docker run --entrypoint /usr/bin/tini ghcr.io/paysuite/paysuite:dev -- paysuite migrate
#
# Build:  docker build -t ghcr.io/paysuite/paysuite:dev .
# Pin the base by digest for releases: --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:...
# Without a registry: a Python 3.11 base built from Debian's packages (tests/compose/,
# `make compose-test` builds it: --build-arg PYTHON_IMAGE=paysuite-local/python:3.11).

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
# build: resolve nothing, download exactly what requirements.runtime.lock pins (hash-checked),
# then install the project itself into the same virtualenv.
#
# requirements.runtime.lock is the runtime subset of requirements.lock (no dev or bench extras:
# no mypy, ruff, pytest, hypothesis, stripe or matplotlib in the image), compiled with
# requirements.lock as constraints so both pin the same versions. `make lock` regenerates both;
# tests/deploy/test_runtime_lock.py fails when they drift apart.
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependencies first so this layer is reused until the lock changes. Every pinned package ships
# a manylinux wheel, so --only-binary keeps compilers out of the build as well.
COPY requirements.runtime.lock ./
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --require-hashes --only-binary=:all: -r requirements.runtime.lock

# The project itself. setuptools comes from the lock (hash-checked; grpcio-tools needs it at
# run time too), hence no build isolation and no unpinned download; --no-deps because the lock
# already installed everything, and `pip check` fails the build if the runtime lock misses a
# dependency that pyproject.toml declares.
COPY . .
RUN pip install --no-deps --no-build-isolation . \
 && pip check

# ---------------------------------------------------------------------------------------------
# runtime: the virtualenv and nothing else from the build; no compilers, no source tree.
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="paysuite" \
      org.opencontainers.image.description="Event-driven payment suite: payment, wallet and gateway gRPC services" \
      org.opencontainers.image.source="https://github.com/paysuite/paysuite" \
      org.opencontainers.image.licenses="Apache-2.0"

# tini as PID 1: forwards SIGTERM to Python so graceful shutdown works, and reaps children.
# Installed only when the base lacks it: the local Debian-built base has it already, so its
# build needs no Debian mirror.
RUN if [ ! -x /usr/bin/tini ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends tini \
      && rm -rf /var/lib/apt/lists/*; \
    fi

# Fixed uid/gid 10001, matching runAsUser in k8s/. HOME is /tmp, the only writable path when
# the root filesystem is read-only (k8s mounts an emptyDir there, compose a tmpfs).
# /data belongs to that user: the provider simulators keep their charges there, and a named
# volume mounted on it starts as a copy of this directory, owner included. Without it the
# volume is root's and the simulators cannot write to it (they crash-looped on exactly that).
RUN groupadd --system --gid 10001 paysuite \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
            --shell /usr/sbin/nologin paysuite \
 && install -d -o 10001 -g 10001 -m 0750 /data

COPY --from=build /opt/venv /opt/venv

# Bytecode was compiled at install time; never try to write more on a read-only filesystem.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PAYSUITE_LOG_FORMAT=json

# An empty, root-owned working directory: `python -m` puts the cwd on sys.path, and nothing
# there may shadow the installed packages.
WORKDIR /app
USER 10001:10001

# gRPC: payment 50051, wallet 50052, gateway 50053. HTTP: webhook adapter 8080, simulators
# 8090/8091, Prometheus /metrics 9100 (every process, when PAYSUITE_METRICS_PORT=9100).
EXPOSE 50051 50052 50053 8080 8090 8091 9100

ENTRYPOINT ["/usr/bin/tini", "--", "python", "-m"]
CMD ["payment_service"]

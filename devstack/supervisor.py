"""`paysuite up`: every process of the suite as child processes of one supervisor.

At start-up it is fail-fast: a process that dies before it is ready stops the suite, so a
broken start is seen at once. Once up, it heals: a process (or the embedded PostgreSQL or
Redis) that dies is restarted with exponential backoff, and the suite stops only on
SIGINT/SIGTERM or when one process crash-loops.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol
from urllib.error import URLError
from urllib.parse import urlsplit
from urllib.request import urlopen

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common import ports
from common.config import ENDPOINTS_FILE, Settings
from common.tokens import ensure_signing_key
from devstack.embedded import EmbeddedServers

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
    # Started once every process of an earlier stage is ready (the recovery worker calls
    # the services: started with them, it only logs that they are unavailable).
    stage: int = 0
    # The service a replica belongs to ("wallet" for "wallet 2"); empty: `name` itself.
    service: str = ""

    @property
    def service_name(self) -> str:
        return self.service or self.name

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
                "PAYSUITE_SIMULATOR_SIGNING_KEY_VARIABLE",
                settings.webhook_secret_variable(config.name),
            ),
            (
                "PAYSUITE_SIMULATOR_WEBHOOK_URL",
                f"http://{settings.webhook_listen}/webhooks/{config.name}",
            ),
            ("PAYSUITE_SIMULATOR_DATA_DIR", str(settings.data_dir / "simulator")),
            # No /metrics here, even with PAYSUITE_METRICS_PORT exported: two simulators on one
            # host would fight over the port (in a container each serves :9100).
            ("PAYSUITE_METRICS_PORT", "0"),
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
    ("PAYSUITE_RECOVERY_RECONCILE_EVERY_S", "30"),
)


def _recovery_worker(settings: Settings, *, demo: bool) -> Process:
    demo_env = DEMO_RECOVERY_ENV if demo else ()
    env = tuple((name, value) for name, value in demo_env if name not in os.environ)
    return Process(
        "recovery worker", "recovery_worker", settings.recovery_listen, "grpc", env=env, stage=1
    )


WALLET = "wallet"


def _wallets(settings: Settings) -> list[Process]:
    """PAYSUITE_WALLET_REPLICAS wallet processes: the first on wallet_listen and named
    "wallet" (as with one), the others "wallet 2", ... on free ports of the same host. Distinct
    ports rather than one shared with SO_REUSEPORT (off, common/grpc/server.py): a port
    shared with whatever else binds it is not ours alone."""
    first = _wallet(0, settings.wallet_listen)
    return [first, *_more_wallets(settings, settings.wallet_replicas - 1, after=1)]


def _wallet(index: int, listen: str) -> Process:
    name = WALLET if index == 0 else f"{WALLET} {index + 1}"
    env = (("PAYSUITE_WALLET_LISTEN", listen),)
    return Process(name, "wallet_service", listen, "grpc", env=env, service=WALLET)


def _more_wallets(settings: Settings, count: int, *, after: int) -> list[Process]:
    host, _, _ = settings.wallet_listen.rpartition(":")
    found = ports.free_ports(count, _probe_host(host))
    return [_wallet(after + i, f"{host}:{port}") for i, port in enumerate(found)]


def extra_wallets(settings: Settings, processes: list[Process], count: int) -> list[Process]:
    """`count` wallet replicas more than `processes` has, numbered after them, each with its
    own port, metrics port and replica name: what the bench starts for one phase."""
    after = sum(1 for p in processes if p.service_name == WALLET)
    more = _more_wallets(settings, count, after=after)
    metrics = ports.free_ports(count, METRICS_HOST)
    return [_with_metrics(_named(p), port) for p, port in zip(more, metrics, strict=True)]


def _probe_host(host: str) -> str:
    """Where a listen host is reached from this machine (0.0.0.0 listens on every one)."""
    return "127.0.0.1" if host in ("", "0.0.0.0") else host


def replica_target(addresses: list[str]) -> str:
    """A gRPC target naming every replica: the address itself for one, else
    `ipv4:h:p,h:p` (or ipv6:), which a round-robin channel (common/grpc/client.py) spreads
    calls over. The hosts must be IP literals; a host name is resolved here."""
    if len(addresses) == 1:
        return addresses[0]
    resolved = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        host = _probe_host(host.strip("[]"))
        try:
            family = ipaddress.ip_address(host).version
        except ValueError:
            host, family = socket.gethostbyname(host), 4
        resolved.append((family, f"[{host}]:{port}" if family == 6 else f"{host}:{port}"))
    families = {family for family, _ in resolved}
    if len(families) > 1:
        raise ValueError(f"replicas on both IPv4 and IPv6 addresses: {addresses}")
    return f"ipv{families.pop()}:" + ",".join(address for _, address in resolved)


def wallet_target(processes: list[Process]) -> str:
    """The target that reaches every wallet replica of `processes`."""
    return replica_target([p.endpoint for p in processes if p.service_name == WALLET])


def with_wallet_target(settings: Settings, processes: list[Process]) -> Settings:
    """`settings` whose wallet_target reaches every wallet replica `processes` starts."""
    return settings.model_copy(update={"wallet_target": wallet_target(processes)})


def plan(settings: Settings, *, demo: bool = True) -> list[Process]:
    """Every process of the suite. `demo`: the recovery worker sweeps every few seconds, so a
    demo shows it; without it (the bench), at its deployed defaults, so its sweeps do not
    weigh on figures that deployments would not see them weigh on.

    With several wallet replicas (PAYSUITE_WALLET_REPLICAS), the processes that call the
    wallet (payment service, recovery worker) get a PAYSUITE_WALLET_TARGET naming them all."""
    wallets = _wallets(settings)
    callers: tuple[tuple[str, str], ...] = ()
    if len(wallets) > 1:
        callers = (("PAYSUITE_WALLET_TARGET", wallet_target(wallets)),)
    ours = [
        *wallets,
        Process("gateway", "gateway_service", settings.gateway_listen, "grpc"),
        Process("payment", "payment_service", settings.payment_listen, "grpc", env=callers),
        _with_env(_recovery_worker(settings, demo=demo), callers),
        Process(
            "webhook adapter",
            "webhook_adapter",
            f"http://{settings.webhook_listen}/healthz",
            "http",
        ),
    ]
    return [
        *(
            _with_metrics(_named(proc), port)
            for proc, port in zip(ours, ports.free_ports(len(ours), METRICS_HOST), strict=True)
        ),
        *(_simulator(settings, i) for i in range(len(settings.provider_configs()))),
    ]


def _with_env(proc: Process, env: tuple[tuple[str, str], ...]) -> Process:
    return replace(proc, env=(*proc.env, *env))


def _named(proc: Process) -> Process:
    """The process's replica name, the same after each restart: its stream consumers keep
    their names, so a restarted process takes over at once what its predecessor had in flight
    rather than waiting for another consumer to claim it (common/streams.py)."""
    name = f"{socket.gethostname()}-{proc.name.replace(' ', '-')}"
    return replace(proc, env=(*proc.env, ("PAYSUITE_REPLICA_NAME", name)))


# Every process of a suite shares one host here, so each gets a free port of its own, below
# the ephemeral range (common.ports: a kernel-assigned port was taken by an outgoing connection
# before the recovery worker bound it; CI: "Address already in use"). In a container they all
# use PAYSUITE_METRICS_PORT=9100. The simulators stand in for the outside
# world and serve no metrics here.
METRICS_HOST = "127.0.0.1"


def _with_metrics(proc: Process, port: int) -> Process:
    env = (("PAYSUITE_METRICS_PORT", str(port)), ("PAYSUITE_METRICS_HOST", METRICS_HOST))
    return replace(proc, env=proc.env + env, metrics_port=port)


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
    return ports.can_bind(host, int(port))


KEY_VARIABLES = frozenset(
    {"PAYSUITE_AUTH_SECRET", "PAYSUITE_AUTH_PUBLIC_KEY_FILE", "PAYSUITE_AUTH_JWKS_FILE"}
)


def child_env(settings: Settings, database_url: str, redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"PAYSUITE_DATABASE_URL": database_url, "PAYSUITE_REDIS_URL": redis_url})
    # `paysuite up` is the development front door: the public development webhook secrets are
    # allowed here (the adapter logs that they are). Deployments never run through it.
    env.setdefault("PAYSUITE_ALLOW_DEV_SECRETS", "true")
    # Access control with the configured key, or else with the data folder's own.
    if settings.auth_public_key_file is None and settings.auth_jwks_file is None:
        env["PAYSUITE_AUTH_SECRET"] = (
            settings.auth_secret.get_secret_value()
            if settings.auth_secret is not None
            else ensure_signing_key(settings.data_dir)
        )
    return env


# Run by the child before it becomes the service: on Linux it asks for SIGTERM when its
# parent dies (PR_SET_PDEATHSIG, 1), even by SIGKILL, so no orphan keeps the suite's ports and
# a new `paysuite up` can start; a parent already gone by then ends it at once.
TRAMPOLINE = (
    "import os, signal, sys\n"
    "if sys.platform == 'linux':\n"
    "    import ctypes\n"
    "    ctypes.CDLL(None).prctl(1, signal.SIGTERM)\n"
    "    if os.getppid() != int(sys.argv[2]):\n"
    "        os._exit(1)\n"
    "os.execv(sys.executable, [sys.executable, '-m', sys.argv[1]])\n"
)


def spawn(
    proc: Process, env: dict[str, str], *, output: int | None = None
) -> subprocess.Popen[bytes]:
    """Its own session: the terminal's Ctrl-C reaches the supervisor alone, which stops every
    child itself, children before the servers they use, whether the signal came from the
    terminal or from `kill -INT <pid>`.

    No preexec_fn: this process makes gRPC calls (readiness and liveness probes), and Python
    run between fork and exec in a process with gRPC's threads can crash the child (seen:
    restarted children dying of SIGSEGV at once). The trampoline does the same in the child,
    after exec.

    `output` (subprocess.PIPE): the child's stdout and stderr together, for a caller that
    keeps its log (`make chaos`); by default both are this process's own."""
    return subprocess.Popen(  # noqa: S603 - our own modules, no shell
        [sys.executable, "-c", TRAMPOLINE, proc.module, str(os.getpid())],
        env={**env, **dict(proc.env)},
        start_new_session=True,
        stdout=output,
        stderr=None if output is None else subprocess.STDOUT,
    )


STOP_TIMEOUT_S = 15.0


def stop_all(children: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to every child at once, then wait; one that outlives the timeout is killed."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


@contextmanager
def running(
    processes: list[Process], env: dict[str, str]
) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for proc in processes:
            children[proc.name] = spawn(proc, env)
        yield children
    finally:
        stop_all(list(children.values()))


def wait_ready(
    processes: list[Process],
    children: dict[str, subprocess.Popen[bytes]],
    stopping: Callable[[], bool] = lambda: False,
) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    waiting = list(processes)
    while waiting and not stopping():
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


class StopSignal:
    """Set by SIGINT, SIGTERM or SIGHUP; the supervisor's loops poll it and then stop in order.

    SIGHUP too: the children run in sessions of their own, so a closed terminal no longer
    hangs them up directly; the supervisor must, or they would outlive it.
    """

    def __init__(self) -> None:
        self.received: int | None = None

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._on_signal)

    def __call__(self) -> bool:
        return self.received is not None

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.received = signum


# --- healing ----------------------------------------------------------------------------


class CrashLoop(Exception):
    """One process crashed too often too quickly: restarting it again would not help."""


@dataclass(frozen=True)
class RestartPolicy:
    first_delay_s: float = 0.5
    max_delay_s: float = 30.0
    # A process that ran this long was healthy: its next crash starts the backoff afresh.
    healthy_after_s: float = 30.0
    max_crashes: int = 5
    window_s: float = 60.0


@dataclass
class Restarts:
    """One unit's crash history: how long to wait before the next restart.

    Hand-written rather than tenacity: tenacity drives one call's retries in its own loop,
    while here one polling loop watches every unit and each restart is a later tick of it;
    the backoff is one line of arithmetic.
    """

    policy: RestartPolicy
    crashes: deque[float] = field(default_factory=deque)
    in_a_row: int = 0

    def delay_after_crash(self, *, now: float, ran_s: float) -> float:
        if ran_s >= self.policy.healthy_after_s:
            self.in_a_row = 0
        self.crashes.append(now)
        while self.crashes and self.crashes[0] < now - self.policy.window_s:
            self.crashes.popleft()
        if len(self.crashes) > self.policy.max_crashes:
            raise CrashLoop(f"{len(self.crashes)} crashes within {self.policy.window_s:.0f} s")
        delay = min(self.policy.first_delay_s * 2.0**self.in_a_row, self.policy.max_delay_s)
        self.in_a_row += 1
        return delay


class Unit(Protocol):
    """Something the supervisor keeps running: a child process or an embedded server."""

    @property
    def name(self) -> str: ...

    def exited(self) -> str | None:
        """None while it runs; else how it ended ("exited with code -9")."""

    def restart(self) -> None: ...


# A gRPC child whose liveness answers NOT_SERVING this many times in a row, probed every
# LIVENESS_EVERY_S, has background work that keeps failing or stalls: it is stopped and
# restarted, as Kubernetes' liveness probe (failureThreshold 3) would. A child that does not
# answer at all (starting, paused, busy) is not counted: only an explicit NOT_SERVING is.
LIVENESS_EVERY_S = 2.0
LIVENESS_FAILURES = 3
LIVENESS_SERVICE = "liveness"
UNHEALTHY_STOP_S = 5.0


@dataclass
class Child:
    proc: Process
    env: dict[str, str]
    popen: subprocess.Popen[bytes]
    clock: Callable[[], float] = time.monotonic
    # How a restart starts it again (a test may start something else).
    spawner: Callable[[Process, dict[str, str]], subprocess.Popen[bytes]] = spawn
    _next_probe: float = 0.0
    _not_serving: int = 0

    @property
    def name(self) -> str:
        return self.proc.name

    def exited(self) -> str | None:
        code = self.popen.poll()
        if code is not None:
            return f"exited with code {code}"
        if self.proc.kind == "grpc" and self._not_alive():
            self._stop_unhealthy()
            return f"reported NOT_SERVING on {LIVENESS_SERVICE} {LIVENESS_FAILURES} times in a row"
        return None

    def restart(self) -> None:
        self.popen = self.spawner(self.proc, self.env)
        self._not_serving = 0

    def _stop_unhealthy(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(timeout=UNHEALTHY_STOP_S)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()

    def _not_alive(self) -> bool:
        now = self.clock()
        if now < self._next_probe:
            return False
        self._next_probe = now + LIVENESS_EVERY_S
        status = grpc_status(self.proc.endpoint, LIVENESS_SERVICE)
        if status == health_pb2.HealthCheckResponse.NOT_SERVING:
            self._not_serving += 1
        elif status == health_pb2.HealthCheckResponse.SERVING:
            self._not_serving = 0
        return self._not_serving >= LIVENESS_FAILURES


@dataclass
class EmbeddedRedis:
    servers: EmbeddedServers
    name: str = "embedded Redis"

    def exited(self) -> str | None:
        code = self.servers.redis_exit_code()
        return None if code is None else f"exited with code {code}"

    def restart(self) -> None:
        self.servers.restart_redis()


@dataclass
class EmbeddedPostgres:
    servers: EmbeddedServers
    name: str = "embedded PostgreSQL"

    def exited(self) -> str | None:
        return None if self.servers.postgres_running() else "is no longer running"

    def restart(self) -> None:
        self.servers.restart_postgres()


@dataclass
class _Watched:
    unit: Unit
    restarts: Restarts
    started_at: float
    restart_at: float | None = None


POLL_S = 0.2


class Supervisor:
    """Restarts whatever dies, with backoff, and says so; raises CrashLoop when one unit
    crashes more than the policy allows."""

    def __init__(
        self,
        units: list[Unit],
        *,
        say: Callable[[str], None],
        policy: RestartPolicy = RestartPolicy(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        now = clock()
        self._watched = [_Watched(unit, Restarts(policy), now) for unit in units]
        self._say = say
        self._clock = clock

    def watch(self, stopping: Callable[[], bool]) -> None:
        while not stopping():
            self.tick()
            time.sleep(POLL_S)

    def tick(self) -> None:
        now = self._clock()
        for watched in self._watched:
            if watched.restart_at is not None:
                if now >= watched.restart_at:
                    self._restart(watched, now)
            elif (how := watched.unit.exited()) is not None:
                self._crashed(watched, how, now)

    def _crashed(self, watched: _Watched, how: str, now: float) -> None:
        name = watched.unit.name
        try:
            delay = watched.restarts.delay_after_crash(now=now, ran_s=now - watched.started_at)
        except CrashLoop as exc:
            raise CrashLoop(f"{name} {how}: {exc}") from None
        watched.restart_at = now + delay
        at = time.strftime("%H:%M:%S", time.localtime(time.time() + delay))
        self._say(f"{name} {how}; restarting it in {delay:.1f} s (at {at})")

    def _restart(self, watched: _Watched, now: float) -> None:
        watched.restart_at = None
        watched.started_at = now
        try:
            watched.unit.restart()
        except Exception as exc:  # a server that cannot start yet is one more crash
            self._crashed(watched, f"failed to restart ({exc!r:.200})", now)
            return
        self._say(f"{watched.unit.name} restarted")


def _grpc_serving(target: str) -> bool:
    return grpc_status(target, "") == health_pb2.HealthCheckResponse.SERVING


def grpc_status(target: str, service: str, *, timeout_s: float = 1.0) -> int | None:
    """The health status `target` reports for `service`, or None when it does not answer."""
    with grpc.insecure_channel(target) as channel:
        try:
            # The typeshed stub declares no methods on HealthStub.
            response = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.RpcError:
            return None
    return int(response.status)


def _http_ok(url: str) -> bool:
    try:
        with urlopen(url, timeout=1.0) as response:  # noqa: S310 - fixed local http URL
            return bool(response.status == 200)
    except (URLError, OSError):
        return False

"""A real `paysuite up` in a subprocess, on its own data folder and free ports: it heals a
SIGKILLed service, the embedded Redis and the embedded PostgreSQL; a second `paysuite up` on
the same folder is refused without touching the first; and a plain `kill -INT` stops it all,
children before the servers, in a few seconds.

One suite for every step: starting one costs most of this test's time."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from common.config import ENDPOINTS_FILE
from common.grpc.server import HEALTH_INTERVAL_S
from common.ports import free_ports
from devstack.supervisor import _grpc_serving
from paysuite_cli.main import app

pytestmark = [pytest.mark.integration]

BAD_REQUESTS = [
    (["payments", "get", str(uuid.uuid4())], 1, "NOT_FOUND"),
    (["payments", "events", "not-an-id"], 1, "INVALID_ARGUMENT"),
    (["payments", "watch", str(uuid.uuid4())], 1, "NOT_FOUND"),
    (["events", "dlq", "replay", "payment", "1-1"], 1, "no entry 1-1"),
    (["sim", "show", "sim-nowhere"], 2, "unknown simulator"),
]

PAYSUITE = [sys.executable, "-c", "from paysuite_cli.main import run; run()"]


def _suite_env(data_dir: Path) -> dict[str, str]:
    ports = free_ports(7)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYSUITE_")}
    env.update(
        PAYSUITE_DATA_DIR=str(data_dir),
        PAYSUITE_LOG_LEVEL="WARNING",
        COLUMNS="200",
        PYTHONUNBUFFERED="1",
    )
    for index, name in enumerate(("payment", "wallet", "gateway")):
        address = f"127.0.0.1:{ports[index]}"
        env[f"PAYSUITE_{name.upper()}_LISTEN"] = env[f"PAYSUITE_{name.upper()}_TARGET"] = address
    env["PAYSUITE_WEBHOOK_LISTEN"] = f"127.0.0.1:{ports[3]}"
    env["PAYSUITE_RECOVERY_LISTEN"] = f"127.0.0.1:{ports[4]}"
    env["PAYSUITE_PROVIDER_URL"] = f"http://127.0.0.1:{ports[5]}"
    env["PAYSUITE_PROVIDER_SECONDARY_URL"] = f"http://127.0.0.1:{ports[6]}"
    return env


class Suite:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.env = _suite_env(data_dir)
        self.log = data_dir.parent / "up.log"
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [*PAYSUITE, "up"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # as `kill -INT <pid>` would reach it: alone
            )

    def output(self) -> str:
        return self.log.read_text()

    def wait_for(self, text: str, timeout_s: float = 60.0) -> None:
        _until(lambda: text in self.output(), timeout_s, f"{text!r} in\n{self.output()}")

    def child(self, marker: str) -> psutil.Process:
        for proc in psutil.Process(self.process.pid).children():
            if any(marker in part for part in proc.cmdline()):
                return proc
        raise AssertionError(f"no child {marker}")

    def grpc_targets(self) -> list[str]:
        return [self.env[f"PAYSUITE_{name}_TARGET"] for name in ("PAYMENT", "WALLET", "GATEWAY")]

    def all_serving(self) -> bool:
        return all(_grpc_serving(target) for target in self.grpc_targets())


def _until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def suite() -> Iterator[Suite]:
    # A short folder rather than tmp_path: the Redis socket's path must stay under the 107
    # bytes a Unix socket address holds (tmp_path's test-named folders come close).
    folder = Path(tempfile.mkdtemp(prefix="up-"))
    running = Suite(folder / "data")
    try:
        running.wait_for("paysuite is up", timeout_s=90)
        yield running
    finally:
        if running.process.poll() is None:
            running.process.send_signal(signal.SIGINT)
            try:
                running.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(running.process.pid, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.timeout(180)
def test_up_heals_refuses_a_second_suite_and_stops_on_a_plain_sigint(suite: Suite) -> None:
    started = suite.output()
    assert "starting recovery worker" in started.split("starting wallet")[1]  # a later stage
    assert "UNAVAILABLE" not in started

    second = subprocess.run(
        [*PAYSUITE, "up"], env=suite.env, capture_output=True, text=True, timeout=30
    )
    assert second.returncode == 1
    assert "already running" in second.stdout
    assert suite.process.poll() is None
    assert (suite.data_dir / ENDPOINTS_FILE).exists()
    assert (suite.data_dir / "redis" / "redis.sock").exists()
    assert suite.all_serving()

    suite.child("gateway_service").send_signal(signal.SIGKILL)
    suite.wait_for("gateway exited with code -9; restarting it in 0.5 s")
    suite.wait_for("gateway restarted")
    _until(suite.all_serving, 30, "every service SERVING after the gateway's restart")

    suite.child("redis-server").send_signal(signal.SIGKILL)
    suite.wait_for("embedded Redis exited with code -9")
    suite.wait_for("embedded Redis restarted")
    time.sleep(HEALTH_INTERVAL_S + 0.5)  # every readiness probe has seen it since
    _until(suite.all_serving, 30, "every service SERVING again after Redis's restart")

    postmaster = int((suite.data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    os.kill(postmaster, signal.SIGKILL)
    suite.wait_for("embedded PostgreSQL is no longer running")
    suite.wait_for("embedded PostgreSQL restarted", timeout_s=60)
    time.sleep(HEALTH_INTERVAL_S + 0.5)  # every readiness probe has seen it since
    _until(suite.all_serving, 30, "every service SERVING again after PostgreSQL's restart")

    # A real request through the payment service and its database, after both restarts.
    for args, code, line in BAD_REQUESTS:
        result = CliRunner().invoke(app, args, env=suite.env)
        assert (result.exit_code, result.output.count("\n")) == (code, 1), result.output
        assert line in result.output

    children = psutil.Process(suite.process.pid).children()
    before = time.monotonic()
    suite.process.send_signal(signal.SIGINT)
    assert suite.process.wait(timeout=15) == 0
    took = time.monotonic() - before
    _gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive
    assert not _running(_in_folder(suite.data_dir)), "an embedded server outlived the suite"
    stopping = suite.output().split("stopping paysuite")[1]
    assert "Connection closed by server" not in stopping
    assert "redis unavailable" not in stopping
    assert not (suite.data_dir / ENDPOINTS_FILE).exists()
    assert took < 8, f"stopping took {took:.1f} s"


@pytest.mark.timeout(240)
def test_a_sigkilled_supervisor_takes_its_services_along_and_a_new_one_starts(
    suite: Suite,
) -> None:
    """No orphan keeps the suite's ports or its data folder: the services stop with the
    supervisor (Linux parent-death signal), its embedded PostgreSQL and Redis within seconds
    (their watchdog), the next `paysuite up` on the folder starts, and its Ctrl-C leaves
    nothing running."""
    services = [
        proc
        for proc in psutil.Process(suite.process.pid).children()
        if any(part.endswith(("_service", "recovery_worker", "webhook")) for part in proc.cmdline())
    ]
    assert len(services) >= 4
    servers = _in_folder(suite.data_dir)
    assert {"postgres", "redis-server"} <= {p.name() for p in servers}
    os.killpg(suite.process.pid, signal.SIGKILL)  # the supervisor alone: children have sessions
    killed = time.monotonic()
    suite.process.wait(timeout=10)
    _gone, alive = psutil.wait_procs(services, timeout=15)
    assert not alive, [p.cmdline() for p in alive]
    _until(lambda: not _running(servers), 10, "the embedded servers to stop")
    print(f"embedded servers down {time.monotonic() - killed:.1f} s after the SIGKILL")

    again = Suite.__new__(Suite)
    again.data_dir, again.env, again.log = suite.data_dir, suite.env, suite.log.with_name("again")
    with again.log.open("w") as out:
        again.process = subprocess.Popen(
            [*PAYSUITE, "up"], env=again.env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        again.wait_for("paysuite is up", timeout_s=90)
        assert again.all_serving()
        servers = _in_folder(suite.data_dir)
        assert {"postgres", "redis-server"} <= {p.name() for p in servers}
    finally:
        again.process.send_signal(signal.SIGINT)
        assert again.process.wait(timeout=30) == 0
    assert not _running(servers)
    assert not _running(_in_folder(suite.data_dir))


def _in_folder(folder: Path) -> list[psutil.Process]:
    """The processes whose arguments name the data folder: its embedded servers."""
    found = []
    for proc in psutil.process_iter():
        try:
            if any(str(folder) in part for part in proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _running(processes: list[psutil.Process]) -> bool:
    def running(proc: psutil.Process) -> bool:
        try:
            return proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    return any(running(proc) for proc in processes)


@pytest.mark.timeout(180)
def test_up_runs_wallet_replicas_each_supervised_and_published_for_the_cli() -> None:
    """PAYSUITE_WALLET_REPLICAS=2: two wallet processes, each listed with its own /metrics,
    both in the target the CLI finds, a killed one restarted alone, and a deposit (payment
    service → both wallets, round robin) completing through them."""
    folder = Path(tempfile.mkdtemp(prefix="up-"))
    suite = Suite.__new__(Suite)
    suite.data_dir, suite.log = folder / "data", folder / "up.log"
    suite.env = _suite_env(suite.data_dir) | {"PAYSUITE_WALLET_REPLICAS": "2"}
    with suite.log.open("w") as out:
        suite.process = subprocess.Popen(
            [*PAYSUITE, "up"], env=suite.env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        suite.wait_for("paysuite is up", timeout_s=90)
        endpoints = json.loads((suite.data_dir / ENDPOINTS_FILE).read_text())
        assert {"wallet", "wallet 2"} <= set(endpoints["metrics"])
        target = endpoints["wallet_target"]
        assert target.startswith(f"ipv4:{suite.env['PAYSUITE_WALLET_LISTEN']},127.0.0.1:")
        second = target.split(",")[1]
        assert _grpc_serving(suite.env["PAYSUITE_WALLET_LISTEN"])
        assert _grpc_serving(second)

        wallets = [p for p in psutil.Process(suite.process.pid).children() if _is_wallet(p)]
        assert len(wallets) == 2
        by_port = {p.environ()["PAYSUITE_WALLET_LISTEN"]: p for p in wallets}
        by_port[second].send_signal(signal.SIGKILL)
        suite.wait_for("wallet 2 exited with code -9; restarting it in 0.5 s")
        suite.wait_for("wallet 2 restarted")
        _until(lambda: _grpc_serving(second), 30, "the second wallet SERVING again")
        assert "wallet exited" not in suite.output()  # the first ran on untouched

        env = {k: v for k, v in suite.env.items() if not k.endswith("_TARGET")}
        result = CliRunner().invoke(app, ["demo", "--timeout", "30"], env=env)
        assert result.exit_code == 0, result.output
        calls = [_wallet_calls(endpoints["metrics"][name]) for name in ("wallet", "wallet 2")]
        assert all(n > 0 for n in calls), calls
    finally:
        suite.process.send_signal(signal.SIGINT)
        try:
            suite.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(suite.process.pid, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)


def _is_wallet(proc: psutil.Process) -> bool:
    try:
        return "wallet_service" in proc.cmdline()
    except psutil.Error:
        return False


def _wallet_calls(metrics_url: str) -> float:
    """WalletService calls the replica has handled (any status)."""
    from prometheus_client.parser import text_string_to_metric_families

    from bench.counters import read_metrics

    return sum(
        sample.value
        for family in text_string_to_metric_families(read_metrics(metrics_url))
        if family.name == "grpc_server_handled"
        for sample in family.samples
        if sample.name.endswith("_total") and "WalletService" in sample.labels["grpc_service"]
    )

"""`paysuite up` refuses to share its data folder or its ports with a running suite, and gives
each of its processes a metrics port of its own."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from common.config import ENDPOINTS_FILE, Settings
from devstack import supervisor
from devstack.supervisor import AlreadyRunning, Process, check_ports_free, exclusive

HOLD_LOCK = """
import sys, time
from pathlib import Path
from devstack.supervisor import exclusive
with exclusive(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(30)
"""


def test_a_second_suite_on_the_same_data_folder_is_refused(tmp_path: Path) -> None:
    first = subprocess.Popen(  # another process, as a second `paysuite up` would meet
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert first.stdout is not None
        assert first.stdout.readline().strip() == "locked"
        with pytest.raises(AlreadyRunning, match=f"pid {first.pid}"), exclusive(tmp_path):
            pass
    finally:
        first.kill()
        first.communicate()
    with exclusive(tmp_path):  # free again once the holder is gone, however it ended
        pass


def test_a_port_already_taken_is_named_before_anything_starts() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        wallet = Process("wallet", "wallet_service", f"127.0.0.1:{port}", "grpc")
        with pytest.raises(AlreadyRunning, match=f"wallet \\(127.0.0.1:{port}\\)"):
            check_ports_free([wallet])


def test_the_suite_runs_the_recovery_worker_with_demo_timings_the_environment_overrides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from common.config import Settings
    from devstack.supervisor import plan

    monkeypatch.setenv("PAYSUITE_RECOVERY_INTERVAL_S", "42")
    worker = next(p for p in plan(Settings()) if p.module == "recovery_worker")

    assert worker.endpoint == "127.0.0.1:50054"
    assert {k: v for k, v in worker.env if k.startswith("PAYSUITE_RECOVERY_")} == {
        "PAYSUITE_RECOVERY_PENDING_AFTER_S": "10",
        "PAYSUITE_RECOVERY_REFUNDING_AFTER_S": "60",
        "PAYSUITE_RECOVERY_STALLED_AFTER_S": "60",
        "PAYSUITE_RECOVERY_RECONCILE_EVERY_S": "30",
    }


def test_each_of_our_processes_gets_its_own_metrics_port_and_the_simulators_none() -> None:
    plan = supervisor.plan(Settings())

    ours = {p.name: p for p in plan if p.metrics_port}
    assert set(ours) == {"wallet", "gateway", "payment", "recovery worker", "webhook adapter"}
    assert len({p.metrics_port for p in ours.values()}) == 5
    for proc in ours.values():
        env = dict(proc.env)
        assert env["PAYSUITE_METRICS_PORT"] == str(proc.metrics_port)
        assert env["PAYSUITE_METRICS_HOST"] == "127.0.0.1"
        assert proc.metrics_url == f"http://127.0.0.1:{proc.metrics_port}/metrics"
    assert all(p.metrics_url == "" for p in plan if p.module == "provider_simulator")


def test_metrics_urls_join_the_embedded_servers_endpoints_file(tmp_path: Path) -> None:
    path = tmp_path / ENDPOINTS_FILE
    path.write_text(json.dumps({"database_url": "postgresql://x", "redis_url": "unix:///r"}))
    plan = supervisor.plan(Settings())

    supervisor.publish_metrics(tmp_path, plan)

    endpoints = json.loads(path.read_text())
    assert endpoints["database_url"] == "postgresql://x"
    assert endpoints["metrics"]["payment"].endswith("/metrics")
    assert len(endpoints["metrics"]) == 5


def test_without_an_endpoints_file_nothing_is_written(tmp_path: Path) -> None:
    supervisor.publish_metrics(tmp_path, supervisor.plan(Settings()))
    assert not (tmp_path / ENDPOINTS_FILE).exists()


# --- healing: the restart policy and the watch loop, on a fake clock ----------------------


class FakeUnit:
    def __init__(self, name: str) -> None:
        self.name = name
        self.dead = False
        self.restarts = 0
        self.fail_restart = False

    def exited(self) -> str | None:
        return "exited with code -9" if self.dead else None

    def restart(self) -> None:
        if self.fail_restart:
            raise RuntimeError("shared memory still in use")
        self.restarts += 1
        self.dead = False


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_to_its_cap_and_starts_afresh_after_a_healthy_run() -> None:
    restarts = supervisor.Restarts(supervisor.RestartPolicy(max_crashes=100))
    delays = [restarts.delay_after_crash(now=i * 100.0, ran_s=1) for i in range(8)]
    assert delays == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert restarts.delay_after_crash(now=900, ran_s=31) == 0.5


def test_more_than_five_crashes_within_a_minute_is_a_crash_loop() -> None:
    restarts = supervisor.Restarts(supervisor.RestartPolicy())
    for second in range(5):
        restarts.delay_after_crash(now=second, ran_s=1)
    with pytest.raises(supervisor.CrashLoop, match="6 crashes within 60 s"):
        restarts.delay_after_crash(now=59, ran_s=1)
    spread = supervisor.Restarts(supervisor.RestartPolicy())
    for minute in range(10):  # one a minute is no loop
        spread.delay_after_crash(now=minute * 61.0, ran_s=1)


def test_a_dead_unit_is_restarted_after_its_delay_and_each_step_is_said() -> None:
    clock, said, unit = Clock(), [], FakeUnit("gateway")
    watcher = supervisor.Supervisor([unit], say=said.append, clock=clock)

    unit.dead = True
    watcher.tick()
    assert said[-1].startswith("gateway exited with code -9; restarting it in 0.5 s (at ")
    clock.now += 0.4
    watcher.tick()
    assert unit.restarts == 0
    clock.now += 0.2
    watcher.tick()
    assert (unit.restarts, said[-1]) == (1, "gateway restarted")


def test_a_restart_that_fails_counts_as_a_crash_and_a_crash_loop_names_the_unit() -> None:
    clock, said, unit = Clock(), [], FakeUnit("embedded PostgreSQL")
    watcher = supervisor.Supervisor([unit], say=said.append, clock=clock)
    unit.dead, unit.fail_restart = True, True

    def tick_for_a_while() -> None:
        for _ in range(20):
            watcher.tick()
            clock.now += 5

    with pytest.raises(supervisor.CrashLoop, match=r"^embedded PostgreSQL failed to restart"):
        tick_for_a_while()
    assert "restarting it in 1.0 s" in said[1]


def test_a_child_whose_liveness_stays_not_serving_is_stopped_to_be_restarted() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    now = [0.0]
    child_process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    proc = Process("payment", "payment_service", f"127.0.0.1:{port}", "grpc")
    child = supervisor.Child(proc, {}, child_process, clock=lambda: now[0])
    try:
        servicer.set("liveness", health_pb2.HealthCheckResponse.SERVING)
        assert child.exited() is None
        servicer.set("liveness", health_pb2.HealthCheckResponse.NOT_SERVING)
        for _ in range(supervisor.LIVENESS_FAILURES - 1):
            now[0] += supervisor.LIVENESS_EVERY_S
            assert child.exited() is None  # not yet: one bad answer is not a verdict
        assert child.exited() is None  # probed at most every LIVENESS_EVERY_S
        now[0] += supervisor.LIVENESS_EVERY_S
        how = child.exited()
        assert how is not None
        assert "NOT_SERVING on liveness" in how
        assert child_process.poll() is not None  # stopped, for the supervisor to restart
    finally:
        child_process.kill()
        child_process.wait()
        server.stop(0)


def test_a_child_is_restarted_by_its_spawner() -> None:
    """`make chaos` restarts children with a spawner of its own (no preexec_fn)."""
    first = subprocess.Popen([sys.executable, "-c", "pass"])
    first.wait()
    second = subprocess.Popen([sys.executable, "-c", "pass"])
    spawned: list[str] = []

    def spawner(proc: Process, env: dict[str, str]) -> subprocess.Popen[bytes]:
        spawned.append(proc.name)
        return second

    proc = Process("wallet", "wallet_service", "127.0.0.1:1", "grpc")
    child = supervisor.Child(proc, {}, first, spawner=spawner)
    try:
        child.restart()
        assert (spawned, child.popen) == (["wallet"], second)
    finally:
        second.wait()


def test_wallet_replicas_each_get_a_port_metrics_port_and_name_of_their_own() -> None:
    plan = supervisor.plan(Settings(wallet_replicas=3))

    wallets = [p for p in plan if p.module == "wallet_service"]
    assert [p.name for p in wallets] == ["wallet", "wallet 2", "wallet 3"]
    assert {p.service_name for p in wallets} == {"wallet"}
    assert wallets[0].endpoint == "127.0.0.1:50052"  # the first where one alone would be
    assert len({p.endpoint for p in wallets}) == 3
    assert len({p.metrics_port for p in plan if p.metrics_port}) == 7  # 5 processes + 2
    for proc in wallets:
        env = dict(proc.env)
        assert env["PAYSUITE_WALLET_LISTEN"] == proc.endpoint
        assert env["PAYSUITE_METRICS_PORT"] == str(proc.metrics_port)
    names = [dict(p.env)["PAYSUITE_REPLICA_NAME"] for p in wallets]
    assert len(set(names)) == 3
    assert names[0].endswith("-wallet")
    assert names[2].endswith("-wallet-3")
    # Each is supervised and waited for on its own: a Process the others know by name.
    assert all(p.kind == "grpc" for p in wallets)


def test_the_wallets_callers_get_a_round_robin_target_naming_every_replica() -> None:
    plan = supervisor.plan(Settings(wallet_replicas=2))

    wallets = [p for p in plan if p.module == "wallet_service"]
    target = supervisor.wallet_target(plan)
    assert target == "ipv4:" + ",".join(p.endpoint for p in wallets)
    callers = {p.name: dict(p.env).get("PAYSUITE_WALLET_TARGET") for p in plan}
    assert callers["payment"] == target
    assert callers["recovery worker"] == target
    assert callers["gateway"] is None  # it never calls the wallet
    # Valid as a setting, as the children will read it.
    assert Settings(wallet_target=target).wallet_target == target
    assert supervisor.with_wallet_target(Settings(), plan).wallet_target == target


def test_one_wallet_is_planned_as_before() -> None:
    plan = supervisor.plan(Settings())

    assert [p.name for p in plan if p.module == "wallet_service"] == ["wallet"]
    assert supervisor.wallet_target(plan) == "127.0.0.1:50052"
    payment = next(p for p in plan if p.name == "payment")
    assert "PAYSUITE_WALLET_TARGET" not in dict(payment.env)


@pytest.mark.parametrize(
    ("addresses", "target"),
    [
        (["127.0.0.1:1"], "127.0.0.1:1"),
        (["127.0.0.1:1", "127.0.0.1:2"], "ipv4:127.0.0.1:1,127.0.0.1:2"),
        (["0.0.0.0:1", "10.0.0.2:2"], "ipv4:127.0.0.1:1,10.0.0.2:2"),
        (["localhost:1", "localhost:2"], "ipv4:127.0.0.1:1,127.0.0.1:2"),
        (["[::1]:1", "[::1]:2"], "ipv6:[::1]:1,[::1]:2"),
    ],
)
def test_replica_targets_use_grpcs_address_list_syntax(addresses: list[str], target: str) -> None:
    assert supervisor.replica_target(addresses) == target


def test_the_endpoints_file_names_every_replicas_metrics(tmp_path: Path) -> None:
    (tmp_path / ENDPOINTS_FILE).write_text(json.dumps({"database_url": "postgresql://x"}))
    plan = supervisor.plan(Settings(wallet_replicas=2))

    supervisor.publish_metrics(tmp_path, plan)

    metrics = json.loads((tmp_path / ENDPOINTS_FILE).read_text())["metrics"]
    assert {"wallet", "wallet 2"} <= set(metrics)
    assert metrics["wallet"] != metrics["wallet 2"]


def test_the_wallet_replica_count_is_validated() -> None:
    from pydantic import ValidationError

    assert Settings().wallet_replicas == 1
    with pytest.raises(ValidationError, match="wallet_replicas"):
        Settings(wallet_replicas=0)

"""The bench's cost accounting counts a service's replicas as the service: their CPU and their
/metrics counters add up under its name."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from bench import harness
from bench.context import BenchContext, BenchOptions
from bench.harness import probe_of
from bench.suite import RunningSuite
from common.config import Settings
from devstack import supervisor


def test_wallet_replicas_are_probed_under_the_wallets_name() -> None:
    settings = Settings(wallet_replicas=2, database_url="postgresql://u@127.0.0.1:5432/postgres")
    processes = supervisor.plan(settings, demo=False)
    sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
    children = {p.name: subprocess.Popen(sleeper) for p in processes if p.metrics_port}
    try:
        probe = probe_of(RunningSuite(settings, children, processes))
    finally:
        for child in children.values():
            child.kill()
            child.wait()

    assert "wallet 2" not in probe.processes
    assert probe.processes["wallet"] == [children["wallet"].pid, children["wallet 2"].pid]
    assert probe.processes["payment"] == [children["payment"].pid]
    names = [name for name, _ in probe.metrics]
    assert names.count("wallet") == 2
    assert names.count("payment") == 1


async def test_with_one_wallet_the_postings_are_measured_again_with_a_second_replica(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    targets: list[str] = []

    async def measure(target: str, token: str, **_: object) -> dict[str, float]:
        targets.append(target)
        return {"wallet_postings_distinct_per_s": float(len(targets)), "wallet_credit_p50_ms": 1}

    @contextmanager
    def more_wallets(count: int) -> Iterator[str]:
        assert count == 1
        yield "ipv4:127.0.0.1:1,127.0.0.1:2"

    monkeypatch.setattr(harness.wallet_bench, "measure", measure)
    ctx = BenchContext(Settings(), BenchOptions(), "run", more_wallets=more_wallets)

    figures = await harness._wallet(ctx)

    assert targets == ["127.0.0.1:50052", "ipv4:127.0.0.1:1,127.0.0.1:2"]
    assert figures == {
        "wallet_replicas": 1.0,
        "wallet_postings_distinct_per_s": 1.0,
        "wallet_credit_p50_ms": 1,
        "wallet_postings_distinct_per_s_2_replicas": 2.0,
    }


async def test_a_suite_already_running_replicas_is_measured_as_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def measure(target: str, token: str, **_: object) -> dict[str, float]:
        return {"wallet_postings_distinct_per_s": 5.0}

    monkeypatch.setattr(harness.wallet_bench, "measure", measure)
    ctx = BenchContext(Settings(), BenchOptions(), "run", wallet_replicas=2)

    assert await harness._wallet(ctx) == {
        "wallet_replicas": 2.0,
        "wallet_postings_distinct_per_s": 5.0,
    }

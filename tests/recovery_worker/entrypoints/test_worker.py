import asyncio
from datetime import datetime

import pytest

from recovery_worker.domain.model import SweepReport, SweepStatus
from recovery_worker.entrypoints.worker import RecoveryWorker
from tests.recovery_worker.fakes import T0, FakeLeases


class SlowSweep:
    name = "slow"

    def __init__(self) -> None:
        self.runs: list[datetime] = []
        self.release = asyncio.Event()

    async def run_once(self, now: datetime) -> SweepReport:
        self.runs.append(now)
        await self.release.wait()
        return SweepReport(self.name, acted=1)


class BrokenSweep:
    name = "broken"

    async def run_once(self, now: datetime) -> SweepReport:
        raise RuntimeError("a bug")


def worker(leases: FakeLeases, *sweeps: object) -> RecoveryWorker:
    return RecoveryWorker(
        sweeps=sweeps,  # type: ignore[arg-type]  # the tests' sweeps are duck-typed fakes
        leases=leases,
        clock=lambda: T0,
        interval_s=0.01,
    )


async def test_two_workers_never_run_the_same_sweep_at_once() -> None:
    leases, sweep = FakeLeases(), SlowSweep()
    one, two = worker(leases, sweep), worker(leases, sweep)

    first = asyncio.create_task(one.run_sweep(sweep))
    await asyncio.sleep(0)
    second = await two.run_sweep(sweep)
    sweep.release.set()

    assert second.status is SweepStatus.BUSY
    assert (await first).acted == 1
    assert sweep.runs == [T0]


async def test_a_broken_sweep_is_reported_and_the_others_still_run() -> None:
    sweep = SlowSweep()
    sweep.release.set()

    reports = await worker(FakeLeases(), BrokenSweep(), sweep).run_round()

    assert [r.status for r in reports] == [SweepStatus.FAILED, SweepStatus.DONE]


async def test_a_lease_store_outage_is_a_round_of_unavailable_reports() -> None:
    leases = FakeLeases()
    leases.down = True

    reports = await worker(leases, SlowSweep()).run_round()

    assert [r.status for r in reports] == [SweepStatus.UNAVAILABLE]


class CountingSweep:
    """Stops the worker on its third run."""

    name = "counting"

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop
        self.runs = 0

    async def run_once(self, now: datetime) -> SweepReport:
        self.runs += 1
        if self.runs == 3:
            self.stop.set()
        return SweepReport(self.name)


@pytest.mark.timeout(5)
async def test_the_loop_runs_a_round_every_interval_until_stopped() -> None:
    stop = asyncio.Event()
    sweep = CountingSweep(stop)

    await worker(FakeLeases(), sweep).run(stop)

    assert sweep.runs == 3

"""The background task supervisor: failures are logged, counted and restarted; a task that
keeps failing, returns, or misses its heartbeat is a problem the health check reports."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import structlog
from prometheus_client import REGISTRY

from common.supervision import Policy, Task, TaskSupervisor, beat

QUICK = Policy(first_delay_s=0.01, max_delay_s=0.02, unhealthy_after=3, watch_every_s=0.01)


def failures(task: str) -> float:
    return REGISTRY.get_sample_value("background_task_failures_total", {"task": task}) or 0.0


async def run_for(supervisor: TaskSupervisor, tasks: list[Task], seconds: float) -> None:
    stop = asyncio.Event()
    running = supervisor.start(tasks, stop)
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*running)


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Waits for `condition` (polled), so a loaded machine only makes the test slower."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - state of the code under test: no event to await
            await asyncio.sleep(0.005)


async def test_a_task_that_raises_is_logged_counted_and_restarted() -> None:
    runs = 0

    async def flaky(stop: asyncio.Event) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise AttributeError("'NoneType' object has no attribute 'decode'")
        await stop.wait()

    before = failures("flaky")
    supervisor = TaskSupervisor("test", policy=QUICK)
    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        running = supervisor.start([Task("flaky", flaky)], stop)
        await until(lambda: runs == 2)
        stop.set()
        await asyncio.gather(*running)
    assert runs == 2
    assert failures("flaky") == before + 1
    failed = [line for line in logs if line["event"] == "background.task_failed"]
    assert failed[0]["task"] == "flaky"
    assert failed[0]["log_level"] == "error"
    assert failed[0]["exc_info"] is not None  # the traceback goes with it
    assert supervisor.problems() == []  # once is not "keeps failing"


async def test_a_task_that_keeps_failing_is_a_problem_until_it_recovers() -> None:
    async def broken(_stop: asyncio.Event) -> None:
        raise RuntimeError("boom")

    supervisor = TaskSupervisor("test", policy=QUICK)
    stop = asyncio.Event()
    running = supervisor.start([Task("broken", broken)], stop)
    await until(lambda: bool(supervisor.problems()))
    problems = supervisor.problems()
    stop.set()
    await asyncio.gather(*running)
    assert len(problems) == 1
    assert "broken" in problems[0]
    assert "RuntimeError('boom')" in problems[0]


async def test_a_task_that_returns_while_the_process_runs_is_restarted() -> None:
    runs = 0

    async def quits(stop: asyncio.Event) -> None:
        nonlocal runs
        runs += 1
        if runs > 1:
            await stop.wait()

    before = failures("quits")
    stop = asyncio.Event()
    running = TaskSupervisor("test", policy=QUICK).start([Task("quits", quits)], stop)
    await until(lambda: runs == 2)
    stop.set()
    await asyncio.gather(*running)
    assert runs == 2
    assert failures("quits") == before + 1


async def test_a_loop_that_misses_its_heartbeat_is_a_problem_and_clears_when_it_beats() -> None:
    release = asyncio.Event()

    async def stuck(stop: asyncio.Event) -> None:
        while not stop.is_set():
            beat()
            await release.wait()  # an await that does not return, until released
            release.clear()
            beat()
            await asyncio.sleep(0.005)

    supervisor = TaskSupervisor("test", policy=QUICK)
    stop = asyncio.Event()
    running = supervisor.start([Task("stuck", stuck, heartbeat_s=0.05)], stop)
    await until(lambda: bool(supervisor.problems()))
    stalled = supervisor.problems()
    release.set()
    await until(lambda: not supervisor.problems())
    after = supervisor.problems()
    stop.set()
    release.set()
    await asyncio.gather(*running)
    assert len(stalled) == 1
    assert "stuck" in stalled[0]
    assert "has not finished an iteration" in stalled[0]
    assert after == []


@pytest.mark.parametrize("heartbeat_s", [None, 10.0])
async def test_a_healthy_task_is_no_problem(heartbeat_s: float | None) -> None:
    async def steady(stop: asyncio.Event) -> None:
        while not stop.is_set():
            beat()
            await asyncio.sleep(0.005)

    supervisor = TaskSupervisor("test", policy=QUICK)
    await run_for(supervisor, [Task("steady", steady, heartbeat_s=heartbeat_s)], 0.1)
    assert supervisor.problems() == []


def test_beat_outside_a_supervised_task_does_nothing() -> None:
    beat()

"""The run's own plumbing: cancelled tasks never hold it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from chaos import run
from chaos.checker import CheckResult


@asynccontextmanager
async def stubborn() -> AsyncIterator[asyncio.Task[None]]:
    """A running task that ends only when the block does, as a stream reader that turns its
    cancellation into a retry."""
    started, release = asyncio.Event(), asyncio.Event()

    async def body() -> None:
        started.set()
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(body())
    await started.wait()
    try:
        yield task
    finally:
        release.set()
        await task


async def test_a_task_that_ignores_its_cancellation_is_left_behind_after_a_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(run, "CANCEL_WAIT_S", 0.1)
    polite = asyncio.create_task(asyncio.sleep(10))
    async with stubborn() as task:
        assert await run._cancelled([task, polite]) == 1

        assert polite.cancelled()
        assert not task.done()


async def test_cancelling_the_run_while_it_waits_for_its_tasks_is_not_swallowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(run, "CANCEL_WAIT_S", 5.0)
    async with stubborn() as task:
        waiting = asyncio.create_task(run._cancelled([task]))
        await asyncio.sleep(0.05)

        waiting.cancel()

        with pytest.raises(asyncio.CancelledError):
            await waiting


def test_a_failed_or_slow_run_keeps_its_logs() -> None:
    ok, failed = CheckResult("a", [], ""), CheckResult("b", ["broken"], "")
    quick = run.SLOW_AFTER_S - 1

    assert not run.slow_or_failed([ok], all_terminal_at=100.0 + quick, last_fault_end=100.0)
    assert run.slow_or_failed([ok, failed], all_terminal_at=100.0 + quick, last_fault_end=100.0)
    assert run.slow_or_failed([ok], all_terminal_at=None, last_fault_end=100.0)
    slow = 100.0 + run.SLOW_AFTER_S + 1
    assert run.slow_or_failed([ok], all_terminal_at=slow, last_fault_end=100.0)

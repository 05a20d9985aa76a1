"""The run's own plumbing: cancelled tasks never hold it."""

from __future__ import annotations

import asyncio

import pytest

from chaos import run


async def _stubborn(started: asyncio.Event, release: asyncio.Event) -> None:
    """Ends only once released, as a stream reader that turns its cancellation into a retry."""
    started.set()
    while not release.is_set():
        try:
            await release.wait()
        except asyncio.CancelledError:
            continue


async def test_a_task_that_ignores_its_cancellation_is_left_behind_after_a_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(run, "CANCEL_WAIT_S", 0.1)
    started, release = asyncio.Event(), asyncio.Event()
    stubborn = asyncio.create_task(_stubborn(started, release))
    polite = asyncio.create_task(asyncio.sleep(10))
    await started.wait()

    assert await run._cancelled([stubborn, polite]) == 1

    assert polite.cancelled()
    assert not stubborn.done()
    release.set()
    await stubborn


async def test_cancelling_the_run_while_it_waits_for_its_tasks_is_not_swallowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(run, "CANCEL_WAIT_S", 5.0)
    started, release = asyncio.Event(), asyncio.Event()
    stubborn = asyncio.create_task(_stubborn(started, release))
    await started.wait()
    waiting = asyncio.create_task(run._cancelled([stubborn]))
    await asyncio.sleep(0.05)

    waiting.cancel()

    with pytest.raises(asyncio.CancelledError):
        await waiting
    release.set()
    await stubborn

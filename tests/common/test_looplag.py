"""The loop-lag timer measures how long ready work waited behind other work on the loop.

Each test records its own samples: the process-wide histogram also takes the samples of any
service runtime another test left running on the same loop, which see the same busy loop."""

from __future__ import annotations

import asyncio
import time

from common.looplag import watch_loop_lag


async def test_a_loop_kept_busy_shows_as_the_time_the_timer_came_late() -> None:
    stop = asyncio.Event()
    samples: list[float] = []
    watcher = asyncio.create_task(watch_loop_lag(stop, interval_s=0.01, observe=samples.append))
    await asyncio.sleep(0.03)
    time.sleep(0.2)  # noqa: ASYNC251 - the point: a callback that holds the loop
    await asyncio.sleep(0.03)
    stop.set()
    await asyncio.wait_for(watcher, timeout=1.0)

    count, total = len(samples), sum(samples)
    assert count >= 3
    # The tick due during the busy 200 ms ran when it ended; the idle ticks add little.
    assert 0.18 <= total < 0.3


async def test_an_idle_loop_shows_no_lag_to_speak_of() -> None:
    stop = asyncio.Event()
    samples: list[float] = []
    watcher = asyncio.create_task(watch_loop_lag(stop, interval_s=0.01, observe=samples.append))
    await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(watcher, timeout=1.0)

    count, total = len(samples), sum(samples)
    assert count > 0
    assert total / count < 0.01

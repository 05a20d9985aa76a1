"""The loop-lag timer measures how long ready work waited behind other work on the loop."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import REGISTRY

from common.looplag import watch_loop_lag


def _observed() -> tuple[float, float]:
    count = REGISTRY.get_sample_value("event_loop_lag_seconds_count") or 0.0
    total = REGISTRY.get_sample_value("event_loop_lag_seconds_sum") or 0.0
    return count, total


async def test_a_loop_kept_busy_shows_as_the_time_the_timer_came_late() -> None:
    stop = asyncio.Event()
    count_before, sum_before = _observed()
    watcher = asyncio.create_task(watch_loop_lag(stop, interval_s=0.01))
    await asyncio.sleep(0.03)
    time.sleep(0.2)  # noqa: ASYNC251 - the point: a callback that holds the loop
    await asyncio.sleep(0.03)
    stop.set()
    await asyncio.wait_for(watcher, timeout=1.0)

    count, total = _observed()
    assert count - count_before >= 3
    # The tick due during the busy 200 ms ran when it ended; the idle ticks add little.
    assert 0.18 <= total - sum_before < 0.3


async def test_an_idle_loop_shows_no_lag_to_speak_of() -> None:
    stop = asyncio.Event()
    count_before, sum_before = _observed()
    watcher = asyncio.create_task(watch_loop_lag(stop, interval_s=0.01))
    await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(watcher, timeout=1.0)

    count, total = _observed()
    assert count > count_before
    assert (total - sum_before) / (count - count_before) < 0.01

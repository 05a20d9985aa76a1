"""How long ready work waits for the event loop: `event_loop_lag_seconds`.

Everything a service does runs on one event loop thread, so a request that is ready (its bytes
arrived, its database answer came back) waits until the callbacks ahead of it have run. That
wait is the part of a call's latency no span shows: the trace says "the commit took 40 ms",
when the commit took 2 and the reply waited 38 behind a batch of postings. A timer measures
it: asked to wake after `interval_s`, it is late by as long as the loop was busy when it came
due, which is what any other callback ready at that moment waited too.

Ten wake-ups a second (a few microseconds each) on every service; one sample a tick, so a
burst that keeps the loop busy for 200 ms shows as a sample of up to 200 ms, not as twenty.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client import Histogram

from common.supervision import Task, beat

INTERVAL_S = 0.1

LOOP_LAG = Histogram(
    "event_loop_lag_seconds",
    "How late the event loop ran a timer due every 100 ms: how long work that was ready then"
    " waited behind other work on the process's one loop thread.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


async def watch_loop_lag(
    stop: asyncio.Event,
    *,
    interval_s: float = INTERVAL_S,
    observe: Callable[[float], None] = LOOP_LAG.observe,
) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        observe(max(0.0, loop.time() - due))
        beat()


def loop_lag_task() -> Task:
    # A loop that misses its heartbeat by seconds has a loop blocked for seconds: the
    # supervisor then reports the process stalled (NOT_SERVING), as it should.
    return Task("event loop lag", watch_loop_lag, heartbeat_s=30.0)

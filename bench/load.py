"""Load drivers: a closed loop (N clients, each sends when its last call returned) and an open
loop (calls at a fixed arrival rate, whatever the answers' speed)."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Sample(Generic[T]):
    started: float  # perf_counter(); in the open loop, the instant the call was due
    finished: float
    result: T | None  # None when the call raised
    error: str = ""

    @property
    def latency(self) -> float:
        return self.finished - self.started


def span(samples: Sequence[Sample[Any]]) -> float:
    """Seconds from the first call's start to the last one's end (NaN without calls)."""
    if not samples:
        return math.nan
    return max(s.finished for s in samples) - min(s.started for s in samples)


def note_errors(notes: list[str], phase: str, samples: Sequence[Sample[Any]], call: str) -> None:
    """One note per phase whose calls failed: how many, and the first error."""
    errors = [s.error for s in samples if s.result is None]
    if errors:
        notes.append(f"{phase}: {len(errors)} {call} calls failed, e.g. {errors[0]}")


async def _timed(call: Callable[[int], Awaitable[T]], i: int, started: float) -> Sample[T]:
    try:
        result = await call(i)
    except Exception as exc:  # a failed call is a sample too: it is counted, not fatal
        return Sample(started, time.perf_counter(), None, f"{type(exc).__name__}: {exc}")
    return Sample(started, time.perf_counter(), result)


async def closed_loop(
    call: Callable[[int], Awaitable[T]],
    *,
    clients: int,
    duration_s: float,
    stop: asyncio.Event | None = None,
) -> list[Sample[T]]:
    """Each client sends until the deadline or until `stop` is set, whichever comes first."""
    counter = itertools.count()
    deadline = time.perf_counter() + duration_s
    samples: list[Sample[T]] = []

    async def client() -> None:
        while time.perf_counter() < deadline and not (stop is not None and stop.is_set()):
            samples.append(await _timed(call, next(counter), time.perf_counter()))

    await asyncio.gather(*(client() for _ in range(clients)))
    return samples


async def open_loop(
    call: Callable[[int], Awaitable[T]], *, rate_per_s: float, duration_s: float
) -> list[Sample[T]]:
    """Latency runs from the instant a call was due, not from when the loop got round to it,
    so a stalled client cannot hide the wait (no coordinated omission)."""
    if rate_per_s <= 0:
        return []
    start = time.perf_counter()
    tasks: list[asyncio.Task[Sample[T]]] = []
    for i in range(int(rate_per_s * duration_s)):
        due = start + i / rate_per_s
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.create_task(_timed(call, i, due)))
    return list(await asyncio.gather(*tasks))

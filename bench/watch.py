"""Sees payments finish by reading `paysuite.payment.events` with plain XREAD.

Cheaper than polling GetPayment for thousands of payments, and it observes what a downstream
consumer would: the instant the terminal event reached the stream. Reading starts at the
stream's last entry taken before the load starts, so nothing published during it is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from bench import cost
from bench.checks import TERMINAL
from bench.context import BenchContext
from paysuite.events.v1 import events_pb2

_READ_COUNT = 500


class CompletionWatcher:
    def __init__(self, redis: Redis, stream: str) -> None:
        self._redis = redis
        self._stream = stream
        self._last_id = "0-0"
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.completed: dict[str, float] = {}  # payment_id -> perf_counter() when seen
        self.finished: dict[str, str] = {}  # payment_id -> terminal status
        self.reads = 0  # XREADs sent: the bench's own Redis commands, left out of the cost
        self._waiters: dict[str, asyncio.Future[str]] = {}

    async def __aenter__(self) -> CompletionWatcher:
        newest: list[Any] = await self._redis.xrevrange(self._stream, count=1)  # type: ignore[assignment]  # redis-py annotates the reply as a loose union
        if newest:
            self._last_id = newest[0][0].decode()
        self._task = asyncio.create_task(self._follow())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        # Stopped between reads, not cancelled inside one: a cancelled blocking XREAD leaves
        # its connection half-closed for the garbage collector to warn about.
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait_finished(self, payment_ids: set[str], *, timeout_s: float) -> bool:
        """True once every payment reached a terminal state; False at the timeout."""
        deadline = time.perf_counter() + timeout_s
        while not payment_ids <= self.finished.keys():
            if time.perf_counter() > deadline:
                return False
            await asyncio.sleep(0.1)
        return True

    async def wait_for(self, payment_id: str, *, timeout_s: float) -> str:
        """The payment's terminal status, once it is seen; TimeoutError after timeout_s."""
        if payment_id in self.finished:
            return self.finished[payment_id]
        waiter = self._waiters.get(payment_id)
        if waiter is None:
            waiter = self._waiters[payment_id] = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout_s)
        finally:
            self._waiters.pop(payment_id, None)

    async def _follow(self) -> None:
        while not self._stop.is_set():
            self.reads += 1
            response: list[Any] = await self._redis.xread(  # type: ignore[assignment]  # redis-py annotates the reply as a loose union
                {self._stream: self._last_id}, count=_READ_COUNT, block=200
            )
            seen = time.perf_counter()
            for _stream, entries in response or ():
                for entry_id, fields in entries:
                    self._last_id = entry_id.decode()
                    self._record(fields, seen)

    def _record(self, fields: dict[bytes, bytes], seen: float) -> None:
        envelope = events_pb2.EventEnvelope.FromString(fields[b"envelope"])
        status = envelope.event_type.removeprefix("payment.")
        if status not in TERMINAL:
            return
        if status == "completed":
            self.completed.setdefault(envelope.aggregate_id, seen)
        self.finished.setdefault(envelope.aggregate_id, status)
        waiter = self._waiters.get(envelope.aggregate_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(self.finished[envelope.aggregate_id])


class NotCompleted(Exception):
    """A payment of a complete loop ended otherwise than `completed`."""


async def complete_loop(
    ctx: BenchContext,
    create: Callable[[int], Awaitable[str]],
    *,
    kind: str,
    duration_s: float,
    redis: Redis,
    stream: str,
) -> cost.Metered[float]:
    """Each client creates a payment (`create` returns its id) and waits until it completed
    before the next one; the payments' cost is metered over this loop (bench/cost.py) and kept
    in `ctx.costs[kind]`. Each sample's result is its create → completed time."""
    async with CompletionWatcher(redis, stream) as watcher:

        async def create_and_wait(i: int) -> float:
            started = time.perf_counter()
            payment_id = await create(i)
            status = await watcher.wait_for(payment_id, timeout_s=ctx.options.settle_timeout_s)
            if status != "completed":
                raise NotCompleted(f"{kind} {payment_id} ended {status}")
            return watcher.completed[payment_id] - started

        metered = await cost.metered_loop(
            create_and_wait,
            kind=kind,
            clients=ctx.options.clients,
            windows=cost.Windows.within(duration_s),
            meter=cost.Meter(
                ctx.probe,
                redis,
                cost.completed_between(watcher.completed),
                lambda: watcher.reads,
                ctx.notes,
            ),
        )
    if metered.cost is not None:
        ctx.costs[kind] = metered.cost
    return metered

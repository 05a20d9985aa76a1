"""Which unverifiable webhooks may make the gateway sync the operation they name, and running
those syncs in the background."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable

from webhook_adapter.forwarder import GatewayForwarder
from webhook_adapter.payload import unverified_reference


class SyncLimiter:
    """Decides which unverifiable webhooks may trigger a sync: one per operation per
    `per_operation_s`, and at most `rate_per_s` overall (a token bucket), so a flood of
    forged webhooks cannot turn into a flood of provider calls."""

    def __init__(
        self,
        *,
        rate_per_s: float,
        per_operation_s: float = 60.0,
        remember: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = rate_per_s
        self._burst = max(1.0, rate_per_s)
        self._tokens = self._burst
        self._per_operation_s = per_operation_s
        self._remember = remember
        self._clock = clock
        self._last_refill = clock()
        self._recent: OrderedDict[str, float] = OrderedDict()

    def allow(self, operation_id: str) -> bool:
        now = self._clock()
        last = self._recent.get(operation_id)
        if last is not None and now - last < self._per_operation_s:
            return False
        self._tokens = min(self._burst, self._tokens + (now - self._last_refill) * self._rate)
        self._last_refill = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        self._recent[operation_id] = now
        self._recent.move_to_end(operation_id)
        while len(self._recent) > self._remember:
            self._recent.popitem(last=False)
        return True


class Syncer:
    """Runs the syncs the limiter allows in the background, so the 401 is not delayed."""

    def __init__(self, forwarder: GatewayForwarder, limiter: SyncLimiter) -> None:
        self._forwarder = forwarder
        self._limiter = limiter
        self._tasks: set[asyncio.Task[None]] = set()

    def maybe_sync(self, body: bytes) -> bool:
        reference = unverified_reference(body)
        if not _is_uuid(reference) or not self._limiter.allow(reference):
            return False
        task = asyncio.create_task(self._forwarder.sync(reference))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True

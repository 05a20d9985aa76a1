"""Which payments changed, as the payment streams tell every replica.

One reader per process follows `paysuite.payment.events` and `paysuite.payment.saga` (each
payment event is on one of them) with plain XREAD (not a consumer group: every replica must
see every event) and wakes the watchers of the payments it names.
A watcher therefore learns of a change made by any replica. The feed only says "look again";
what a watcher sends is always read from the database, so a missed wake-up (Redis restarting)
costs at most the watcher's re-check interval, never a wrong state.

With nobody watching, the reader rests (reading every event of a busy stream for no one
costs CPU on the deposit path). It resumes from the stream's end when a watcher arrives and
then wakes every watcher once, so a change made while it was resting is looked at too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.typing import KeyT, StreamIdT

from common.aio import wait_any
from common.errors import DependencyUnavailable
from common.streams import as_text, redis_boundary
from common.supervision import beat

log = structlog.get_logger(__name__)

IDLE_BEAT_S = 5.0


class PaymentChangeFeed:
    def __init__(self, redis: Redis, *, streams: Sequence[str], block_ms: int = 1000) -> None:
        self._redis = redis
        self._streams = tuple(streams)
        self._block_ms = block_ms
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._watched = asyncio.Event()

    @contextlib.asynccontextmanager
    async def subscribe(self, payment_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set whenever the payment may have changed (the watcher clears it)."""
        changed = asyncio.Event()
        self._watchers.setdefault(payment_id, set()).add(changed)
        self._watched.set()
        try:
            yield changed
        finally:
            watchers = self._watchers.get(payment_id, set())
            watchers.discard(changed)
            if not watchers:
                self._watchers.pop(payment_id, None)
            if not self._watchers:
                self._watched.clear()

    async def run(self, stop: asyncio.Event) -> None:
        last: dict[str, str] | None = None  # None: resting, or about to resume from the ends
        while not stop.is_set():
            beat()
            try:
                if not self._watched.is_set():
                    last = None
                    # Bounded, so a resting feed still beats for its supervisor.
                    await wait_any(stop, self._watched, at_most_s=IDLE_BEAT_S)
                    continue
                if last is None:
                    # Where the streams end now, before the watchers look again: any change
                    # after their look is an entry past these points.
                    last = {stream: await self._stream_end(stream) for stream in self._streams}
                    self._wake_everyone()
                last = await self._read(last)
            except DependencyUnavailable as exc:
                log.warning("payment.change_feed_waiting", error=str(exc))
                await wait_any(stop, at_most_s=1.0)

    async def _stream_end(self, stream: str) -> str:
        async with redis_boundary("XREVRANGE"):
            newest = await self._redis.xrevrange(stream, count=1)
        if not newest:
            return "0-0"
        entry_id = newest[0][0]
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def _wake_everyone(self) -> None:
        for watchers in self._watchers.values():
            for changed in watchers:
                changed.set()

    async def _read(self, last: dict[str, str]) -> dict[str, str]:
        positions: dict[KeyT, StreamIdT] = {stream: at for stream, at in last.items()}
        async with redis_boundary("XREAD"):
            # The stubs type the reply of every protocol version; this client speaks RESP2.
            reply: list[Any] = await self._redis.xread(  # type: ignore[assignment]  # RESP2: a list
                positions, count=500, block=self._block_ms
            )
        read = dict(last)
        for stream, entries in reply or ():
            name = as_text(stream)
            for entry_id, fields in entries:
                read[name] = as_text(entry_id)
                aggregate = fields.get(b"aggregate_id", b"").decode()
                for changed in self._watchers.get(aggregate, ()):
                    changed.set()
        return read

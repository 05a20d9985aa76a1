"""The transactional outbox: written in the business transaction, published by the relay.

Relay contract (safe with any number of replicas, against every service database):
- it claims unpublished rows with `FOR UPDATE SKIP LOCKED`, so replicas split the work and a
  row whose transaction commits late is still unpublished, never skipped (no "id > last seen");
- it XADDs them to their Redis stream and marks them published in the same database
  transaction; a crash between the two republishes the batch, and consumers deduplicate on
  event_id (at-least-once delivery, exactly-once effect);
- it wakes on NOTIFY from an insert trigger and polls as a fallback, so a lost notification
  (relay reconnecting) delays an event by at most one poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import psycopg
import structlog
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from common.events import OutgoingEvent

log = structlog.get_logger(__name__)

NOTIFY_CHANNEL = "paysuite_outbox"
# Streams keep roughly this many entries; consumers that fall further behind than this are
# a page-worthy incident anyway, and unbounded streams fill Redis memory.
STREAM_MAXLEN = 1_000_000

_INSERT = text(
    "INSERT INTO outbox (event_id, stream, event_type, aggregate_type, aggregate_id,"
    " aggregate_version, envelope) VALUES (:event_id, :stream, :event_type, :aggregate_type,"
    " :aggregate_id, :aggregate_version, :envelope)"
)
_CLAIM = text(
    "SELECT id, stream, event_id, event_type, aggregate_id, aggregate_version, envelope"
    " FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED"
)
_MARK = text("UPDATE outbox SET published_at = now() WHERE id = ANY(:ids)")


async def write_outbox(conn: AsyncConnection, events: Sequence[OutgoingEvent]) -> None:
    """Adds events to the outbox inside the caller's open transaction."""
    if not events:
        return
    await conn.execute(
        _INSERT,
        [
            {
                "event_id": e.envelope.event_id,
                "stream": e.stream,
                "event_type": e.envelope.event_type,
                "aggregate_type": e.envelope.aggregate_type,
                "aggregate_id": e.envelope.aggregate_id,
                "aggregate_version": e.envelope.aggregate_version,
                "envelope": e.envelope.SerializeToString(),
            }
            for e in events
        ],
    )


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        redis: Redis,
        *,
        listen_dsn: str,
        batch_size: int = 200,
        poll_interval_s: float = 1.0,
        stream_prefix: str = "",
    ) -> None:
        self._stream_prefix = stream_prefix
        self._engine = engine
        self._redis = redis
        self._listen_dsn = listen_dsn
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._wake = asyncio.Event()

    async def publish_batch(self) -> int:
        """Publishes up to one batch; returns how many events it published."""
        async with self._engine.begin() as conn:
            rows = (await conn.execute(_CLAIM, {"limit": self._batch_size})).all()
            if not rows:
                return 0
            pipe = self._redis.pipeline(transaction=False)
            for row in rows:
                pipe.xadd(
                    self._stream_prefix + row.stream,
                    {
                        "event_id": str(row.event_id),
                        "event_type": row.event_type,
                        "aggregate_id": row.aggregate_id,
                        "aggregate_version": str(row.aggregate_version),
                        "envelope": bytes(row.envelope),
                    },
                    maxlen=STREAM_MAXLEN,
                    approximate=True,
                )
            await pipe.execute()
            await conn.execute(_MARK, {"ids": [row.id for row in rows]})
        log.debug("outbox.published", count=len(rows))
        return len(rows)

    async def run(self, stop: asyncio.Event) -> None:
        listener = asyncio.create_task(self._listen(stop))
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    while await self.publish_batch() == self._batch_size:
                        pass
                except Exception as exc:
                    # Redis or PostgreSQL is down: the rows stay unpublished and are retried.
                    log.warning("outbox.publish_failed", error=repr(exc))
                await _wait_any(stop, self._wake, self._poll_interval_s)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _listen(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                conn = await psycopg.AsyncConnection.connect(self._listen_dsn, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    async for _ in conn.notifies():
                        self._wake.set()
            except psycopg.Error as exc:
                log.warning("outbox.listen_failed", error=repr(exc))
                await _wait_any(stop, stop, self._poll_interval_s)


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    waiters = {asyncio.create_task(stop.wait()), asyncio.create_task(wake.wait())}
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)

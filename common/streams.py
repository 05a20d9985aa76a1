"""Redis Streams consumer groups with at-least-once delivery and exactly-once effects.

A handler does its effect and records the event id (see `mark_processed`) in ONE database
transaction, then the consumer acknowledges. Redelivery after a crash is therefore harmless.
Entries left pending by a dead consumer are reclaimed with XAUTOCLAIM once idle; an entry that
keeps failing, or cannot even be parsed, is parked on `<stream>.dlq` and acknowledged, so one
poison message cannot block a stream. A handler failing with DependencyUnavailable (the
wallet is down, say) is never dead-lettered: the entry waits for the dependency.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from google.protobuf.message import DecodeError
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from common.errors import DependencyUnavailable
from common.events import dead_letter_stream
from paysuite.events.v1 import events_pb2

log = structlog.get_logger(__name__)

Handler = Callable[[events_pb2.EventEnvelope], Awaitable[None]]

_MARK_PROCESSED = text(
    "INSERT INTO processed_events (consumer, event_id) VALUES (:consumer, :event_id)"
    " ON CONFLICT DO NOTHING"
)


async def mark_processed(conn: AsyncConnection, consumer: str, event_id: str) -> bool:
    """Records the event as processed in the caller's transaction.

    Returns False when it was processed before: the caller must then skip its effect.
    """
    result = await conn.execute(_MARK_PROCESSED, {"consumer": consumer, "event_id": event_id})
    return bool(result.rowcount)


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class StreamConsumer:
    def __init__(
        self,
        redis: Redis,
        *,
        stream: str,
        group: str,
        handler: Handler,
        block_ms: int = 1000,
        claim_idle_ms: int = 30_000,
        max_deliveries: int = 10,
        batch_size: int = 50,
        name: str | None = None,
    ) -> None:
        self._redis = redis
        self.stream = stream
        self.group = group
        self._handler = handler
        self._block_ms = block_ms
        self._claim_idle_ms = claim_idle_ms
        self._max_deliveries = max_deliveries
        self._batch_size = batch_size
        self.name = name or consumer_name()

    async def ensure_group(self) -> None:
        # From the start of the stream: a group created after events were published still
        # sees them; deduplication makes reprocessing harmless.
        try:
            await self._redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.ensure_group()
                while not stop.is_set():
                    await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("stream.consume_failed", stream=self.stream, error=repr(exc))
                await asyncio.sleep(1.0)

    async def poll_once(self) -> int:
        """Reclaims idle entries, then reads new ones; returns how many it handled."""
        claimed = await self._redis.xautoclaim(
            self.stream, self.group, self.name, self._claim_idle_ms, "0-0", self._batch_size
        )
        entries: list[tuple[bytes, dict[bytes, bytes]]] = list(claimed[1])
        if not entries:
            response: list[Any] = await self._redis.xreadgroup(  # type: ignore[assignment]
                self.group,
                self.name,
                {self.stream: ">"},
                count=self._batch_size,
                block=self._block_ms,
            )
            for _stream, stream_entries in response or ():
                entries.extend(stream_entries)
        for entry_id, fields in entries:
            if fields:  # a claimed entry trimmed from the stream arrives without fields
                await self._handle(entry_id, fields)
            else:
                await self._redis.xack(self.stream, self.group, entry_id)
        return len(entries)

    async def _handle(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        try:
            envelope = events_pb2.EventEnvelope.FromString(fields[b"envelope"])
        except (KeyError, DecodeError):
            await self._park(entry_id, fields, "unparseable envelope")
            return
        bound = log.bind(stream=self.stream, event_id=envelope.event_id, type=envelope.event_type)
        try:
            await self._handler(envelope)
        except DependencyUnavailable as exc:
            # Not the message's fault: keep it pending however long the outage lasts, rather
            # than dead-lettering a perfectly good event after N quick failures.
            bound.warning("stream.dependency_unavailable", error=str(exc))
            return
        except Exception as exc:
            deliveries = await self._deliveries(entry_id)
            if deliveries >= self._max_deliveries:
                bound.error("stream.poison", deliveries=deliveries, error=repr(exc))
                await self._park(entry_id, fields, repr(exc))
            else:
                bound.warning("stream.handler_failed", deliveries=deliveries, error=repr(exc))
            return
        await self._redis.xack(self.stream, self.group, entry_id)

    async def _deliveries(self, entry_id: bytes) -> int:
        pending: list[dict[str, Any]] = await self._redis.xpending_range(
            self.stream, self.group, min=entry_id, max=entry_id, count=1
        )
        return int(pending[0]["times_delivered"]) if pending else 1

    async def _park(self, entry_id: bytes, fields: dict[bytes, bytes], error: str) -> None:
        parked = dict(fields)
        parked.update(
            {
                b"source_stream": self.stream.encode(),
                b"source_id": entry_id,
                b"group": self.group.encode(),
                b"error": error[:1000].encode(),
            }
        )
        await self._redis.xadd(dead_letter_stream(self.stream), parked)  # type: ignore[arg-type]
        await self._redis.xack(self.stream, self.group, entry_id)
        log.error("stream.dead_lettered", stream=self.stream, entry_id=entry_id.decode())

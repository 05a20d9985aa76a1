"""The event pipeline alone: the outbox relay and a no-op stream consumer, each beside raw
Redis doing the same transfer (pipelined XADD, plain XREAD) on the same server.

Both run on scratch state (a database under a bench prefix, streams under a bench prefix),
wired the way the services wire them (`common.bootstrap.Infra`), so they get the configured
batch sizes and whatever tuning the services get.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio import Redis

from bench.context import BenchContext
from bench.stats import rate
from common import db
from common.bootstrap import Infra
from common.config import Settings
from common.events import OutgoingEvent, make_envelope
from common.outbox import write_outbox
from payment_service.bootstrap import DATABASE as SCRATCH_DB
from paysuite.common.v1 import money_pb2
from paysuite.events.v1 import events_pb2

RELAY_STREAM = "relay"
RAW_STREAM = "raw"
INSERT_CHUNK = 1_000
# StreamConsumer's own read size, so the raw XREAD baseline moves entries the same way.
RAW_READ_COUNT = 50
DRAIN_TIMEOUT_S = 120.0


def scratch_settings(ctx: BenchContext) -> Settings:
    return ctx.settings.model_copy(
        update={
            "database_prefix": f"bench_{ctx.run_id}_",
            "stream_prefix": f"{ctx.settings.stream_prefix}bench.{ctx.run_id}.",
        }
    )


def sample_events(count: int) -> list[OutgoingEvent]:
    """Real `payment.completed` envelopes, so entries have the size the services publish."""
    return [OutgoingEvent(RELAY_STREAM, _completed_envelope(i)) for i in range(count)]


def _completed_envelope(i: int) -> events_pb2.EventEnvelope:
    payment_id = f"00000000-0000-4000-8000-{i:012d}"
    return make_envelope(
        event_type="payment.completed",
        aggregate_type="payment",
        aggregate_id=payment_id,
        aggregate_version=3,
        producer="payment-service",
        payload=events_pb2.PaymentStatusChanged(
            payment_id=payment_id,
            kind="deposit",
            from_status="pending",
            to_status="completed",
            amount=money_pb2.Money(amount_minor=100 + i % 9900, currency="USD"),
            destination_account_id="00000000-0000-4000-8000-000000000000",
        ),
    )


async def measure(ctx: BenchContext) -> dict[str, float]:
    settings = scratch_settings(ctx)
    await asyncio.to_thread(SCRATCH_DB.migrate, settings)
    infra = Infra.connect(settings, SCRATCH_DB)
    try:
        events = sample_events(ctx.options.pipeline_events)
        figures = await _relay(infra, events)
        raw = settings.stream_prefix + RAW_STREAM
        figures.update(await _raw_xadd(infra.redis, raw, events, batch=settings.relay_batch_size))
        figures.update(await _consumer(infra, raw, len(events)))
        return figures
    finally:
        await _cleanup(infra, settings)


async def _relay(infra: Infra, events: Sequence[OutgoingEvent]) -> dict[str, float]:
    """Committed rows to stream entries, timed from the first claim to the last row marked."""
    for start in range(0, len(events), INSERT_CHUNK):
        async with infra.engine.begin() as conn:
            await write_outbox(conn, events[start : start + INSERT_CHUNK])
    relay = infra.relay()
    published = 0
    started = time.perf_counter()
    deadline = started + DRAIN_TIMEOUT_S
    while published < len(events) and time.perf_counter() < deadline:
        batch = await relay.publish_batch()
        published += batch
        if not batch:  # rows another relay replica holds: wait for them rather than spin
            await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    return {"relay_events_per_s": rate(published, elapsed) if published >= len(events) else 0.0}


async def _raw_xadd(
    redis: Redis, stream: str, events: Sequence[OutgoingEvent], *, batch: int
) -> dict[str, float]:
    """What the relay's Redis half costs at best: same entries, same batch size, no database."""
    entries = [_fields(e.envelope) for e in events]
    started = time.perf_counter()
    for start in range(0, len(entries), batch):
        pipe = redis.pipeline(transaction=False)
        for fields in entries[start : start + batch]:
            pipe.xadd(stream, fields)  # type: ignore[arg-type]  # redis-py's stub wants str-keyed fields; bytes keys are what Redis returns and takes
        await pipe.execute()
    return {"raw_xadd_per_s": rate(len(entries), time.perf_counter() - started)}


def _fields(envelope: events_pb2.EventEnvelope) -> dict[str, str | bytes]:
    return {
        "event_id": envelope.event_id,
        "event_type": envelope.event_type,
        "aggregate_id": envelope.aggregate_id,
        "aggregate_version": str(envelope.aggregate_version),
        "envelope": envelope.SerializeToString(),
    }


async def _consumer(infra: Infra, stream: str, count: int) -> dict[str, float]:
    figures = {"raw_xread_per_s": await _raw_xread(infra.redis, stream, count)}
    figures["consumer_events_per_s"] = await _no_op_consumer(infra, stream, count)
    figures["skipping_consumer_events_per_s"] = await _skipping_consumer(infra, stream, count)
    return figures


async def _no_op_consumer(infra: Infra, stream: str, count: int) -> float:
    handled = 0

    async def no_op(_envelope: events_pb2.EventEnvelope) -> None:
        nonlocal handled
        handled += 1

    return await _group_rate(infra, stream, "bench-no-op", no_op, lambda: handled >= count, count)


async def _skipping_consumer(infra: Infra, stream: str, count: int) -> float:
    """A group that acts on none of the stream's types (as the saga's group, before its
    triggers had a stream of their own, did not act on `payment.pending` or
    `payment.completed`): what each entry it acknowledges unread costs."""
    seen = 0

    def handles(_event_type: str) -> bool:
        nonlocal seen
        seen += 1
        return False

    async def never(_envelope: events_pb2.EventEnvelope) -> None:
        raise AssertionError("a skipped entry reached the handler")

    return await _group_rate(
        infra, stream, "bench-skipping", never, lambda: seen >= count, count, handles=handles
    )


async def _group_rate(
    infra: Infra,
    stream: str,
    group: str,
    handler: Callable[[events_pb2.EventEnvelope], Awaitable[None]],
    done: Callable[[], bool],
    count: int,
    *,
    handles: Callable[[str], bool] | None = None,
) -> float:
    """Entries per second a new consumer group of `stream` took to see all `count` entries
    (`done`) and acknowledge them; 0 if it did not within the timeout."""
    # Infra.consumer prefixes the stream name itself.
    name = stream.removeprefix(infra.settings.stream_prefix)
    consumer = infra.consumer(stream=name, group=group, handler=handler, handles=handles)
    await consumer.ensure_group()
    stop = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(consumer.run(stop))
    try:
        drained = await _until_drained(infra.redis, stream, group, done)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
    return rate(count, drained - started) if drained else 0.0


async def _raw_xread(redis: Redis, stream: str, count: int) -> float:
    last = "0-0"
    read = 0
    started = time.perf_counter()
    while read < count:
        response: list[Any] = await redis.xread({stream: last}, count=RAW_READ_COUNT)  # type: ignore[assignment]  # redis-py annotates the reply as a loose union
        entries = response[0][1] if response else []
        if not entries:
            break
        read += len(entries)
        last = entries[-1][0]
    return rate(read, time.perf_counter() - started)


async def _until_drained(redis: Redis, stream: str, group: str, handled_all: Any) -> float | None:
    """The instant every entry was handled and acknowledged; None at the timeout."""
    deadline = time.perf_counter() + DRAIN_TIMEOUT_S
    while time.perf_counter() < deadline:
        if handled_all():
            summary: dict[str, Any] = await redis.xpending(stream, group)
            if not summary["pending"]:
                return time.perf_counter()
        await asyncio.sleep(0.005)
    return None


async def _cleanup(infra: Infra, settings: Settings) -> None:
    prefix = settings.stream_prefix
    keys = [key async for key in infra.redis.scan_iter(match=f"{prefix}*")]
    if keys:
        await infra.redis.delete(*keys)
    await infra.close()
    await asyncio.to_thread(db.drop_database, SCRATCH_DB.url(settings))

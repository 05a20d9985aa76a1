"""The stream consumer under load and under faults, on a real Redis and PostgreSQL: parallel
across aggregates, ordered within one, exactly-once effects when a consumer dies before its
acknowledgement, and poison messages parked without holding up the entries behind them."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from common import db
from common.config import Settings
from common.events import dead_letter_stream, make_envelope
from common.migrations import DROP_NOTIFY_DDL, OUTBOX_DDL
from common.streams import Handler, StreamConsumer, mark_processed
from paysuite.events.v1 import events_pb2

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def envelope(aggregate: str, version: int) -> events_pb2.EventEnvelope:
    return make_envelope(
        event_type="thing.happened",
        aggregate_type="test",
        aggregate_id=aggregate,
        aggregate_version=version,
        payload=events_pb2.AccountOpened(account_id=aggregate),
        producer="test",
    )


async def publish(redis: Redis, stream: str, envelopes: list[events_pb2.EventEnvelope]) -> None:
    """As the relay writes them: the aggregate id beside the envelope."""
    pipe = redis.pipeline(transaction=False)
    for e in envelopes:
        pipe.xadd(
            stream,
            {
                "event_id": e.event_id,
                "aggregate_id": e.aggregate_id,
                "envelope": e.SerializeToString(),
            },
        )
    await pipe.execute()


async def pending(redis: Redis, stream: str, group: str) -> int:
    return int((await redis.xpending(stream, group))["pending"])


async def run_until(consumer: StreamConsumer, done: asyncio.Event) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        await asyncio.wait_for(done.wait(), 30)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def test_aggregates_run_in_parallel_and_each_stays_in_order(
    redis: Redis, migrated: Settings
) -> None:
    stream = f"{migrated.stream_prefix}test.{uuid.uuid4()}"
    aggregates = [str(uuid.uuid4()) for _ in range(50)]
    envelopes = [envelope(a, v) for v in range(1, 21) for a in aggregates]  # 1,000, interleaved
    seen: dict[str, list[int]] = defaultdict(list)
    running = 0
    most_at_once = 0
    done = asyncio.Event()

    async def handler(e: events_pb2.EventEnvelope) -> None:
        nonlocal running, most_at_once
        running += 1
        most_at_once = max(most_at_once, running)
        await asyncio.sleep(0.001)  # a database round trip's worth of waiting
        running -= 1
        seen[e.aggregate_id].append(e.aggregate_version)
        if sum(map(len, seen.values())) == len(envelopes):
            done.set()

    consumer = StreamConsumer(
        redis, stream=stream, group="g", handler=handler, block_ms=50, concurrency=16
    )
    await consumer.ensure_group()
    await publish(redis, stream, envelopes)
    await run_until(consumer, done)

    assert all(seen[a] == list(range(1, 21)) for a in aggregates)
    assert 1 < most_at_once <= 16
    assert await pending(redis, stream, "g") == 0


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def effects_engine(migrated: Settings) -> AsyncIterator[AsyncEngine]:
    url = db.service_database_url(
        migrated.require_database_url(), "effects_test", prefix=migrated.database_prefix
    )
    db.ensure_database(url)
    engine = db.create_engine(url, pool_size=4)
    async with engine.begin() as conn:
        for statement in (*OUTBOX_DDL, *DROP_NOTIFY_DDL):
            await conn.execute(text(statement))
        await conn.execute(text("CREATE TABLE effects (event_id UUID NOT NULL, consumer TEXT)"))
    yield engine
    await engine.dispose()
    db.drop_database(url)


def effect_handler(engine: AsyncEngine, consumer: str) -> Handler:
    """An effect and its processed-event record in one transaction, as every handler does."""

    async def handle(e: events_pb2.EventEnvelope) -> None:
        async with db.database_boundary("effect"), engine.begin() as conn:
            if await mark_processed(conn, "effects", e.event_id):
                await conn.execute(
                    text("INSERT INTO effects VALUES (:e, :c)"), {"e": e.event_id, "c": consumer}
                )

    return handle


async def effects(engine: AsyncEngine, event_id: str) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT consumer FROM effects WHERE event_id = :e"), {"e": event_id}
        )
        return [row.consumer for row in rows]


async def test_a_consumer_dying_after_its_effect_and_before_xack_applies_it_once(
    redis: Redis, migrated: Settings, effects_engine: AsyncEngine
) -> None:
    stream = f"{migrated.stream_prefix}test.{uuid.uuid4()}"
    e = envelope(str(uuid.uuid4()), 1)
    dying = StreamConsumer(
        redis, stream=stream, group="g", handler=effect_handler(effects_engine, "a"), name="a"
    )
    await dying.ensure_group()
    await publish(redis, stream, [e])

    async def never_acknowledges() -> None:
        """The process died here: its effect is committed, its XACK never sent."""

    dying._flush = never_acknowledges  # type: ignore[method-assign]  # the test's crash between commit and XACK
    await dying.poll_once()
    assert await effects(effects_engine, e.event_id) == ["a"]
    assert await pending(redis, stream, "g") == 1

    heir = StreamConsumer(
        redis,
        stream=stream,
        group="g",
        handler=effect_handler(effects_engine, "b"),
        claim_idle_ms=50,
        block_ms=10,
        name="b",
    )
    await asyncio.sleep(0.1)  # past claim_idle_ms: the entry counts as abandoned
    assert await heir.poll_once() == 1
    assert await effects(effects_engine, e.event_id) == ["a"]  # applied once, by the first
    assert await pending(redis, stream, "g") == 0


async def test_a_poison_event_is_parked_without_blocking_the_entries_behind_it(
    redis: Redis, migrated: Settings
) -> None:
    stream = f"{migrated.stream_prefix}test.{uuid.uuid4()}"
    poison = envelope("poisoned", 1)
    healthy = [envelope(str(uuid.uuid4()), 1) for _ in range(20)]
    handled: list[str] = []
    done = asyncio.Event()

    async def handler(e: events_pb2.EventEnvelope) -> None:
        if e.event_id == poison.event_id:
            raise ValueError("cannot handle this one")
        handled.append(e.event_id)

    consumer = StreamConsumer(
        redis, stream=stream, group="g", handler=handler, block_ms=20, max_deliveries=3
    )
    await consumer.ensure_group()
    await publish(redis, stream, [poison, *healthy])

    async def parked() -> None:
        while not await redis.xlen(dead_letter_stream(stream)):  # noqa: ASYNC110 - Redis state
            await asyncio.sleep(0.05)
        done.set()

    watcher = asyncio.create_task(parked())
    await run_until(consumer, done)
    await watcher
    assert sorted(handled) == sorted(e.event_id for e in healthy)
    ((_id, fields),) = await redis.xrange(dead_letter_stream(stream))
    assert fields[b"event_id"].decode() == poison.event_id
    assert b"cannot handle this one" in fields[b"error"]
    assert await pending(redis, stream, "g") == 0


async def test_an_entry_behind_a_failing_one_of_its_aggregate_waits_for_it(
    redis: Redis, migrated: Settings
) -> None:
    stream = f"{migrated.stream_prefix}test.{uuid.uuid4()}"
    first, second = envelope("agg", 1), envelope("agg", 2)
    attempts = 0
    order: list[int] = []
    done = asyncio.Event()

    async def handler(e: events_pb2.EventEnvelope) -> None:
        nonlocal attempts
        if e.aggregate_version == 1 and attempts < 2:
            attempts += 1
            raise RuntimeError("transient")
        order.append(e.aggregate_version)
        if len(order) == 2:
            done.set()

    consumer = StreamConsumer(
        redis, stream=stream, group="g", handler=handler, block_ms=20, max_deliveries=5
    )
    await consumer.ensure_group()
    await publish(redis, stream, [first, second])
    await run_until(consumer, done)
    assert order == [1, 2]
    assert await redis.xlen(dead_letter_stream(stream)) == 0

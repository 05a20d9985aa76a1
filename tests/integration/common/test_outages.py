"""Outages are waits, not failures: a consumer whose PostgreSQL, then whose Redis, is stopped
for longer than max-deliveries x claim-idle dead-letters nothing, and applies every effect
exactly once when the server is back. Real servers of the test's own, really stopped."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from common import db
from common.events import OutgoingEvent, dead_letter_stream
from common.migrations import DROP_NOTIFY_DDL, OUTBOX_DDL
from common.outbox import OutboxRelay, outbox_committed, write_outbox
from common.streams import StreamConsumer
from tests.integration.common.test_stream_pipeline import effect_handler, envelope, publish
from tests.integration.servers import StoppableServers, stoppable_servers

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

MAX_DELIVERIES = 3
CLAIM_IDLE_MS = 100
# Several times max-deliveries x claim-idle: the old consumer had dead-lettered by then.
OUTAGE_S = 8 * MAX_DELIVERIES * CLAIM_IDLE_MS / 1000


@pytest.fixture
def servers() -> Iterator[StoppableServers]:
    with stoppable_servers() as started:
        yield started


@pytest_asyncio.fixture(loop_scope="session")
async def engine(servers: StoppableServers) -> AsyncIterator[AsyncEngine]:
    url = db.service_database_url(servers.database_url, "outage")
    db.ensure_database(url)
    engine = db.create_engine(url, pool_size=4, pool_timeout_s=1)
    async with engine.begin() as conn:
        for statement in (*OUTBOX_DDL, *DROP_NOTIFY_DDL):
            await conn.execute(text(statement))
        await conn.execute(text("CREATE TABLE effects (event_id UUID NOT NULL, consumer TEXT)"))
    yield engine
    await engine.dispose()


async def effect_count(engine: AsyncEngine) -> tuple[int, int]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(text("SELECT count(*), count(DISTINCT event_id) FROM effects"))
        ).one()
    return int(row[0]), int(row[1])


async def wait_for_effects(engine: AsyncEngine, expected: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if (await effect_count(engine))[1] >= expected:
                return
        except Exception:  # noqa: S110 - the server is still coming back; ask again
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"fewer than {expected} effects after {timeout_s}s")


def consumer(redis: Redis, stream: str, engine: AsyncEngine) -> StreamConsumer:
    return StreamConsumer(
        redis,
        stream=stream,
        group="g",
        handler=effect_handler(engine, "c"),
        block_ms=50,
        claim_idle_ms=CLAIM_IDLE_MS,
        max_deliveries=MAX_DELIVERIES,
    )


async def test_a_postgresql_outage_dead_letters_nothing_and_applies_each_effect_once(
    servers: StoppableServers, engine: AsyncEngine
) -> None:
    redis = Redis.from_url(servers.redis_url)
    stream = f"test.{uuid.uuid4()}"
    the_consumer = consumer(redis, stream, engine)
    await the_consumer.ensure_group()
    stop = asyncio.Event()
    task = asyncio.create_task(the_consumer.run(stop))
    try:
        await publish(redis, stream, [envelope(str(uuid.uuid4()), 1) for _ in range(10)])
        await wait_for_effects(engine, 10)

        servers.stop_postgres()
        await publish(redis, stream, [envelope(str(uuid.uuid4()), 1) for _ in range(20)])
        await asyncio.sleep(OUTAGE_S)
        assert await redis.xlen(dead_letter_stream(stream)) == 0
        servers.start_postgres()

        await wait_for_effects(engine, 30)
        assert await effect_count(engine) == (30, 30)  # each applied, none twice
        assert await redis.xlen(dead_letter_stream(stream)) == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await redis.aclose()


async def test_a_redis_outage_loses_nothing_and_dead_letters_nothing(
    servers: StoppableServers, engine: AsyncEngine
) -> None:
    redis = Redis.from_url(servers.redis_url)
    stream = f"test.{uuid.uuid4()}"
    the_consumer = consumer(redis, stream, engine)
    await the_consumer.ensure_group()
    await publish(redis, stream, [envelope(str(uuid.uuid4()), 1) for _ in range(10)])
    stop = asyncio.Event()
    task = asyncio.create_task(the_consumer.run(stop))
    try:
        await wait_for_effects(engine, 10)
        servers.stop_redis()
        await asyncio.sleep(OUTAGE_S)
        servers.start_redis()
        await publish(redis, stream, [envelope(str(uuid.uuid4()), 1) for _ in range(10)])
        await wait_for_effects(engine, 20)
        assert await effect_count(engine) == (20, 20)
        assert await redis.xlen(dead_letter_stream(stream)) == 0
        assert not task.done()  # the consumer waited; it did not crash
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await redis.aclose()


async def test_a_redis_that_comes_back_without_its_last_entries_gets_them_again(
    servers: StoppableServers, engine: AsyncEngine
) -> None:
    """A Redis restarted without what it had acknowledged last (its append-only file lost
    here, the last second of it under `appendfsync everysec`): the relay notices the new
    run id and publishes the recent rows again, with the same event ids."""
    redis = Redis.from_url(servers.redis_url)
    stream = f"test.{uuid.uuid4()}"
    relay = OutboxRelay(engine, redis, poll_interval_s=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        async with engine.begin() as conn:
            await write_outbox(conn, [OutgoingEvent(stream, envelope(str(uuid.uuid4()), 1))])
        outbox_committed(engine)
        before = await wait_for_entries(redis, stream, 1)
        await relay.sample_streams()  # the relay has seen this Redis's run id

        servers.stop_redis()
        for kept in (servers.folder / "redis").glob("appendonly*"):  # 6: a file, 7: a folder
            if kept.is_dir():
                shutil.rmtree(kept)
            else:
                kept.unlink()
        servers.start_redis()

        after = await wait_for_entries(redis, stream, 1)
        assert after == before
        assert not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await redis.aclose()


async def wait_for_entries(redis: Redis, stream: str, count: int) -> list[bytes]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            entries = await redis.xrange(stream)
        except Exception:
            entries = []
        if len(entries) >= count:
            return [fields[b"event_id"] for _entry_id, fields in entries]
        await asyncio.sleep(0.1)
    raise AssertionError(f"fewer than {count} entries on {stream} after 30 s")

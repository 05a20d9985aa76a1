"""The outbox relay against a real PostgreSQL and Redis (invariant 7: every committed change
reaches its stream; nothing is skipped)."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from common import db
from common.config import Settings
from common.events import OutgoingEvent, make_envelope
from common.migrations import DROP_NOTIFY_DDL, OUTBOX_DDL
from common.outbox import OutboxProgress, OutboxRelay, outbox_committed, write_outbox
from paysuite.events.v1 import events_pb2

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def outbox_engine(migrated: Settings) -> AsyncIterator[AsyncEngine]:
    """A database of its own, so no service's relay competes for these rows."""
    url = db.service_database_url(
        migrated.require_database_url(), "outbox_test", prefix=migrated.database_prefix
    )
    db.ensure_database(url)
    engine = db.create_engine(url, pool_size=4)
    async with engine.begin() as conn:
        exists = await conn.scalar(text("SELECT to_regclass('outbox') IS NOT NULL"))
        if not exists:
            for statement in (*OUTBOX_DDL, *DROP_NOTIFY_DDL):
                await conn.execute(text(statement))
    yield engine
    await engine.dispose()
    db.drop_database(url)


def event(stream: str, name: str) -> OutgoingEvent:
    envelope = make_envelope(
        event_type=name,
        aggregate_type="test",
        aggregate_id=str(uuid.uuid4()),
        aggregate_version=1,
        payload=events_pb2.AccountOpened(account_id=name),
        producer="test",
    )
    return OutgoingEvent(stream, envelope)


def relay(engine: AsyncEngine, redis: Redis, settings: Settings, **kwargs: object) -> OutboxRelay:
    return OutboxRelay(
        engine,
        redis,
        stream_prefix=settings.stream_prefix,
        **kwargs,  # type: ignore[arg-type]  # each test's relay options, typed object
    )


async def published(redis: Redis, stream: str) -> list[str]:
    return [fields[b"event_type"].decode() for _id, fields in await redis.xrange(stream)]


async def test_a_row_whose_transaction_commits_late_is_not_skipped(
    outbox_engine: AsyncEngine, redis: Redis, migrated: Settings
) -> None:
    stream = f"test.{uuid.uuid4()}"
    late = await outbox_engine.connect()
    await late.begin()
    await write_outbox(late, [event(stream, "late")])  # takes the lower id, commits last
    async with outbox_engine.begin() as conn:
        await write_outbox(conn, [event(stream, "early")])
    the_relay = relay(outbox_engine, redis, migrated)

    assert await the_relay.publish_batch() == 1
    await late.commit()
    await late.close()
    assert await the_relay.publish_batch() == 1
    assert await the_relay.publish_batch() == 0
    assert await published(redis, migrated.stream_prefix + stream) == ["early", "late"]


async def test_rolled_back_changes_publish_nothing(
    outbox_engine: AsyncEngine, redis: Redis, migrated: Settings
) -> None:
    stream = f"test.{uuid.uuid4()}"
    async with outbox_engine.connect() as conn:
        await conn.begin()
        await write_outbox(conn, [event(stream, "rolled-back")])
        await conn.rollback()
    while await relay(outbox_engine, redis, migrated).publish_batch():
        pass
    assert await published(redis, migrated.stream_prefix + stream) == []


async def test_two_relays_publish_each_row_once(
    outbox_engine: AsyncEngine, redis: Redis, migrated: Settings
) -> None:
    stream = f"test.{uuid.uuid4()}"
    async with outbox_engine.begin() as conn:
        await write_outbox(conn, [event(stream, f"e{i}") for i in range(300)])
    relays = [relay(outbox_engine, redis, migrated, batch_size=7) for _ in range(2)]

    async def drain(r: OutboxRelay) -> None:
        while await r.publish_batch():
            pass

    await asyncio.gather(*(drain(r) for r in relays))
    names = await published(redis, migrated.stream_prefix + stream)
    assert sorted(names) == sorted(f"e{i}" for i in range(300))


async def test_a_commit_wakes_the_relay_long_before_its_poll_interval(
    outbox_engine: AsyncEngine, redis: Redis, migrated: Settings
) -> None:
    stream = f"test.{uuid.uuid4()}"
    stop = asyncio.Event()
    task = asyncio.create_task(relay(outbox_engine, redis, migrated, poll_interval_s=60).run(stop))
    try:
        await asyncio.sleep(0.1)  # let it start
        async with outbox_engine.begin() as conn:
            await write_outbox(conn, [event(stream, "woken")])
        outbox_committed(outbox_engine)  # what every unit of work does after its commit
        for _ in range(100):
            if await published(redis, migrated.stream_prefix + stream):
                break
            await asyncio.sleep(0.05)
        assert await published(redis, migrated.stream_prefix + stream) == ["woken"]
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)


async def test_a_lingering_relay_takes_the_commits_of_its_linger_in_one_claim(
    outbox_engine: AsyncEngine, redis: Redis, migrated: Settings
) -> None:
    stream = f"test.{uuid.uuid4()}"
    the_relay = relay(outbox_engine, redis, migrated, poll_interval_s=60, linger_s=0.3)
    while await the_relay.publish_batch():  # what earlier tests left
        pass
    claimed = {"outcome": "published"}
    claims_before = REGISTRY.get_sample_value("outbox_claims_total", claimed) or 0.0
    stop = asyncio.Event()
    task = asyncio.create_task(the_relay.run(stop))
    try:
        await asyncio.sleep(0.1)  # let it start
        for name in ("first", "second"):
            async with outbox_engine.begin() as conn:
                await write_outbox(conn, [event(stream, name)])
            outbox_committed(outbox_engine)
            await asyncio.sleep(0.05)
        assert await published(redis, migrated.stream_prefix + stream) == []  # lingering
        for _ in range(100):
            if len(await published(redis, migrated.stream_prefix + stream)) == 2:
                break
            await asyncio.sleep(0.05)
        assert await published(redis, migrated.stream_prefix + stream) == ["first", "second"]
        claims = REGISTRY.get_sample_value("outbox_claims_total", claimed) or 0.0
        assert claims == claims_before + 1
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)


def versioned(stream: str, aggregate: str, version: int) -> OutgoingEvent:
    envelope = make_envelope(
        event_type="thing.changed",
        aggregate_type="test",
        aggregate_id=aggregate,
        aggregate_version=version,
        payload=events_pb2.AccountOpened(account_id=aggregate),
        producer="test",
    )
    return OutgoingEvent(stream, envelope)


async def write_versions(engine: AsyncEngine, stream: str, aggregates: int, versions: int) -> None:
    """Versions committed in order, aggregates interleaved, as concurrent writers leave them."""
    names = [str(uuid.uuid4()) for _ in range(aggregates)]
    for version in range(1, versions + 1):
        async with engine.begin() as conn:
            await write_outbox(conn, [versioned(stream, name, version) for name in names])


async def entries(redis: Redis, stream: str) -> list[tuple[str, str, int]]:
    """(event_id, aggregate_id, version) of every entry, in stream order."""
    return [
        (
            fields[b"event_id"].decode(),
            fields[b"aggregate_id"].decode(),
            int(fields[b"aggregate_version"]),
        )
        for _id, fields in await redis.xrange(stream)
    ]


def assert_in_order_per_aggregate(found: list[tuple[str, str, int]]) -> None:
    last: dict[str, int] = {}
    for _event_id, aggregate, version in found:
        assert version > last.get(aggregate, 0), f"{aggregate}: {version} after {last[aggregate]}"
        last[aggregate] = version


async def test_three_relays_publish_10000_rows_once_each_in_per_aggregate_order(
    outbox_engine: AsyncEngine, redis: Redis, migrated: Settings
) -> None:
    stream = f"test.{uuid.uuid4()}"
    await write_versions(outbox_engine, stream, aggregates=100, versions=100)
    relays = [relay(outbox_engine, redis, migrated, batch_size=97) for _ in range(3)]
    published_by: list[int] = []

    async def drain(r: OutboxRelay) -> None:
        idle = 0
        while idle < 20:  # another replica may hold the partitions for a moment
            count = await r.publish_batch()
            published_by.append(count)
            idle = 0 if count else idle + 1
            await asyncio.sleep(0)

    await asyncio.gather(*(drain(r) for r in relays))
    found = await entries(redis, migrated.stream_prefix + stream)
    assert len(found) == 10_000
    assert len({event_id for event_id, _a, _v in found}) == 10_000
    assert_in_order_per_aggregate(found)


RELAY_PROCESS = """
import asyncio, sys
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from sqlalchemy.engine import make_url
from common import db
from common.outbox import OutboxRelay

async def main() -> None:
    engine = db.create_engine(make_url(sys.argv[1]), pool_size=1)
    redis = Redis.from_url(sys.argv[2])
    relay = OutboxRelay(engine, redis, batch_size=25, stream_prefix=sys.argv[3])
    print("started", flush=True)
    while await relay.publish_batch():
        await asyncio.sleep(0.01)  # a long drain, so the kill lands in the middle of it

asyncio.run(main())
"""


async def test_a_relay_killed_mid_batch_loses_nothing_and_republishes_the_same_event_ids(
    outbox_engine: AsyncEngine, redis: Redis, migrated: Settings
) -> None:
    stream = f"test.{uuid.uuid4()}"
    full = migrated.stream_prefix + stream
    await write_versions(outbox_engine, stream, aggregates=50, versions=60)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        RELAY_PROCESS,
        outbox_engine.url.render_as_string(hide_password=False),
        migrated.require_redis_url(),
        migrated.stream_prefix,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    await process.stdout.readline()
    while await redis.xlen(full) < 500:  # noqa: ASYNC110 - polling another process's progress
        await asyncio.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    await process.wait()
    async with outbox_engine.connect() as conn:
        left = await conn.scalar(text("SELECT count(*) FROM outbox WHERE published_at IS NULL"))
    assert left, "the relay finished before it was killed; nothing was tested"

    survivor = relay(outbox_engine, redis, migrated)
    while await survivor.publish_batch():
        pass
    found = await entries(redis, full)
    written = 50 * 60
    assert len({event_id for event_id, _a, _v in found}) == written  # nothing lost
    # A batch XADDed but not marked when the relay died is published again, with the same
    # event ids; consumers deduplicate on them (test_stream_pipeline shows the effect once).
    duplicates = len(found) - written
    assert 0 <= duplicates <= 25
    first_seen: list[tuple[str, str, int]] = []
    ids: set[str] = set()
    for item in found:
        if item[0] not in ids:
            ids.add(item[0])
            first_seen.append(item)
    assert_in_order_per_aggregate(first_seen)


async def test_published_rows_are_purged_after_the_retention_and_not_before(
    outbox_engine: AsyncEngine, redis: Redis, migrated: Settings
) -> None:
    stream = f"test.{uuid.uuid4()}"
    async with outbox_engine.begin() as conn:
        await write_outbox(conn, [event(stream, f"e{i}") for i in range(5)])
    the_relay = relay(outbox_engine, redis, migrated, retention=timedelta(hours=1))
    while await the_relay.publish_batch():
        pass
    async with outbox_engine.begin() as conn:
        await write_outbox(conn, [event(stream, "unpublished")])
        await conn.execute(  # two of them were published long ago
            text(
                "UPDATE outbox SET published_at = now() - interval '2 hours' WHERE id IN"
                " (SELECT id FROM outbox WHERE stream = :s AND published_at IS NOT NULL"
                " ORDER BY id LIMIT 2)"
            ),
            {"s": stream},
        )

    assert await the_relay.purge_published() == 2
    async with outbox_engine.connect() as conn:
        left = await conn.execute(
            text("SELECT published_at IS NULL FROM outbox WHERE stream = :s"), {"s": stream}
        )
        assert sorted(unpublished for (unpublished,) in left) == [False, False, False, True]


async def test_a_stream_is_trimmed_only_below_what_every_group_acknowledged(
    outbox_engine: AsyncEngine, redis: Redis, migrated: Settings
) -> None:
    stream = f"{migrated.stream_prefix}test.{uuid.uuid4()}"
    ids = [await redis.xadd(stream, {"n": str(i)}) for i in range(10)]
    the_relay = relay(outbox_engine, redis, migrated, stream_retention=timedelta(0))
    assert await the_relay.trim_stream(stream) == 0  # no group yet: nobody said what they need

    await redis.xgroup_create(stream, "fast", id="0")
    await redis.xgroup_create(stream, "slow", id="0")
    fast = await redis.xreadgroup("fast", "c", {stream: ">"}, count=10)
    await redis.xack(stream, "fast", *[entry_id for entry_id, _ in fast[0][1]])
    slow = await redis.xreadgroup("slow", "c", {stream: ">"}, count=6)
    await redis.xack(stream, "slow", *[entry_id for entry_id, _ in slow[0][1][:4]])
    # "slow" acknowledged 0-3, still holds 4-5 pending, and has not read 6-9.

    await the_relay.trim_stream(stream)
    kept = [entry_id for entry_id, _ in await redis.xrange(stream)]
    assert kept == ids[4:]


async def test_a_broadcast_stream_without_groups_keeps_the_retention_alone(
    outbox_engine: AsyncEngine, redis: Redis, migrated: Settings
) -> None:
    """A stream read by plain XREAD (the public payment stream) has no group to say what it
    still needs: what is older than the retention goes, as a log's readers expect. Once a
    group appears on it, its unread entries are kept as on any stream."""
    name = f"test.{uuid.uuid4()}"
    stream = migrated.stream_prefix + name
    ten_minutes_ago = int(time.time() * 1000) - 600_000
    for i in range(3):
        await redis.xadd(stream, {"n": str(i)}, id=f"{ten_minutes_ago}-{i}")
    recent = [await redis.xadd(stream, {"n": str(i)}) for i in range(2)]
    the_relay = relay(
        outbox_engine, redis, migrated, stream_retention=timedelta(minutes=1), broadcast=[name]
    )
    assert await the_relay.trim_stream(stream) == 3
    assert [entry_id for entry_id, _ in await redis.xrange(stream)] == recent

    group_stream = migrated.stream_prefix + f"test.{uuid.uuid4()}"
    for i in range(3):
        await redis.xadd(group_stream, {"n": str(i)}, id=f"{ten_minutes_ago}-{i}")
    await redis.xgroup_create(group_stream, "late", id="0")  # has read nothing yet
    grouped = relay(
        outbox_engine,
        redis,
        migrated,
        stream_retention=timedelta(minutes=1),
        broadcast=[group_stream.removeprefix(migrated.stream_prefix)],
    )
    assert await grouped.trim_stream(group_stream) == 0


async def test_the_stream_retention_keeps_acknowledged_entries_for_a_while(
    outbox_engine: AsyncEngine, redis: Redis, migrated: Settings
) -> None:
    stream = f"{migrated.stream_prefix}test.{uuid.uuid4()}"
    for i in range(3):
        await redis.xadd(stream, {"n": str(i)})
    await redis.xgroup_create(stream, "g", id="0")
    read = await redis.xreadgroup("g", "c", {stream: ">"}, count=3)
    await redis.xack(stream, "g", *[entry_id for entry_id, _ in read[0][1]])
    the_relay = relay(outbox_engine, redis, migrated, stream_retention=timedelta(hours=1))
    assert await the_relay.trim_stream(stream) == 0
    assert await redis.xlen(stream) == 3


async def test_the_relay_counts_what_it_publishes_and_samples_its_backlog(
    outbox_engine: AsyncEngine, redis: Redis, migrated: Settings
) -> None:
    stream = f"test.{uuid.uuid4()}"
    the_relay = relay(outbox_engine, redis, migrated)
    while await the_relay.publish_batch():  # what earlier tests left
        pass
    async with outbox_engine.begin() as conn:
        await write_outbox(conn, [event(stream, "a"), event(stream, "b")])
    before = REGISTRY.get_sample_value("outbox_published_total") or 0.0
    claims = {"outcome": "published"}, {"outcome": "empty"}
    claims_before = [REGISTRY.get_sample_value("outbox_claims_total", c) or 0.0 for c in claims]

    backlog, age = await the_relay.sample_backlog()
    assert backlog == 2
    assert 0 <= age < 60
    assert REGISTRY.get_sample_value("outbox_backlog") == 2
    assert await the_relay.publish_batch() == 2
    assert await the_relay.publish_batch() == 0

    assert REGISTRY.get_sample_value("outbox_published_total") == before + 2
    # One claim found both rows, the next found none: each a transaction of its own. The
    # counters are the process's: the relays of services other tests left running claim too,
    # finding nothing while idle, so only the empty claims may have grown by more than ours.
    claims_after = [REGISTRY.get_sample_value("outbox_claims_total", c) or 0.0 for c in claims]
    assert claims_after[0] == claims_before[0] + 1
    assert claims_after[1] >= claims_before[1] + 1
    assert await the_relay.sample_backlog() == (0, 0.0)
    assert REGISTRY.get_sample_value("outbox_oldest_unpublished_age_seconds") == 0


class AckingBetweenReads(Redis):
    """A real Redis client that lets a consumer acknowledge everything between the floor's
    XINFO GROUPS and its XPENDING: the race that stopped the relay, driven deterministically."""

    def __init__(self, real: Redis, stream: str, group: str) -> None:
        super().__init__(connection_pool=real.connection_pool)
        self._stream = stream
        self._group = group

    async def xpending(self, name: str, groupname: str) -> Any:  # type: ignore[override]  # narrower than redis-py's KeyT/GroupT, which this test does not need
        pending = await super().xpending_range(self._stream, self._group, "-", "+", 1000)
        if pending:
            await super().xack(self._stream, self._group, *[p["message_id"] for p in pending])
        return await super().xpending(name, groupname)


async def test_the_trim_survives_consumers_acknowledging_everything_between_its_reads(
    outbox_engine: AsyncEngine, redis: Redis, migrated: Settings
) -> None:
    stream_name = f"test.{uuid.uuid4()}"
    stream = migrated.stream_prefix + stream_name
    ids = [await redis.xadd(stream, {"n": str(i)}) for i in range(5)]
    await redis.xgroup_create(stream, "g", id="0")
    await redis.xreadgroup("g", "c", {stream: ">"}, count=5)  # all five pending
    racing = AckingBetweenReads(redis, stream, "g")
    the_relay = relay(outbox_engine, racing, migrated, stream_retention=timedelta(0))

    # XINFO saw 5 pending; XPENDING then answered {'pending': 0, 'min': None}.
    await the_relay.trim_stream(stream)
    assert [entry_id for entry_id, _ in await redis.xrange(stream)] == ids[4:]

    # And the relay goes on publishing with trimming in every round.
    while await the_relay.publish_batch():  # what earlier tests left
        pass
    stop = asyncio.Event()
    running = asyncio.create_task(the_relay.run(stop))
    async with outbox_engine.begin() as conn:
        await write_outbox(conn, [event(stream_name, "late")])
    outbox_committed(outbox_engine)
    for _ in range(400):  # 20 s: a round is milliseconds, but a loaded host stalls the loop
        if len(await redis.xrange(stream)) > 1:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await running
    assert len(await redis.xrange(stream)) == 2  # the kept last entry and the new one
    await racing.aclose(close_connection_pool=False)


async def test_a_trim_of_a_stream_that_is_gone_trims_nothing(
    outbox_engine: AsyncEngine, redis: Redis, migrated: Settings
) -> None:
    the_relay = relay(outbox_engine, redis, migrated, stream_retention=timedelta(0))
    assert await the_relay.trim_stream(f"{migrated.stream_prefix}gone.{uuid.uuid4()}") == 0


async def test_the_relay_samples_stream_lengths_and_redis_memory(
    outbox_engine: AsyncEngine, redis: Redis, migrated: Settings
) -> None:
    stream_name = f"test.{uuid.uuid4()}"
    the_relay = relay(outbox_engine, redis, migrated)
    while await the_relay.publish_batch():
        pass
    async with outbox_engine.begin() as conn:
        await write_outbox(conn, [event(stream_name, "a"), event(stream_name, "b")])
    await the_relay.publish_batch()
    await the_relay.sample_streams()
    stream = migrated.stream_prefix + stream_name
    assert REGISTRY.get_sample_value("stream_length", {"stream": stream}) == 2
    assert (REGISTRY.get_sample_value("redis_used_memory_bytes") or 0) > 0


async def test_progress_says_stalled_only_when_the_same_row_waits_past_the_threshold(
    outbox_engine: AsyncEngine, redis: Redis, migrated: Settings
) -> None:
    the_relay = relay(outbox_engine, redis, migrated)
    while await the_relay.publish_batch():
        pass
    now = [0.0]
    progress = OutboxProgress(outbox_engine, stalled_after_s=0.5, clock=lambda: now[0])
    assert await progress.problem() is None  # nothing waits
    async with outbox_engine.begin() as conn:
        await write_outbox(conn, [event(f"test.{uuid.uuid4()}", "stuck")])
    assert await progress.problem() is None  # first seen now
    now[0] += 1.0
    await asyncio.sleep(0.6)  # and the row itself is older than the threshold
    found = await progress.problem()
    assert found is not None
    assert found.startswith("outbox stalled")
    progress.reset()  # an outage in between: the relay gets the whole threshold again
    assert await progress.problem() is None
    await the_relay.publish_batch()
    now[0] += 1.0
    assert await progress.problem() is None  # published: moving again

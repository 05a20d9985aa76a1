"""`paysuite outbox status`, `events pending` and `events dlq ...` against a real PostgreSQL
and Redis, through the CLI as an operator types it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from typer.testing import CliRunner

from common import db
from common.config import Settings
from common.events import (
    GATEWAY_STREAM,
    PAYMENT_STREAM,
    WALLET_STREAM,
    dead_letter_stream,
    make_envelope,
)
from common.streams import StreamConsumer
from devstack.pipeline import pending_status
from paysuite.events.v1 import events_pb2
from paysuite_cli import ops
from paysuite_cli.main import app
from paysuite_cli.ops import replay

pytestmark = [pytest.mark.integration]

runner = CliRunner()


def cli(settings: Settings, *args: str) -> tuple[int, str]:
    env = {
        "PAYSUITE_DATABASE_URL": settings.require_database_url(),
        "PAYSUITE_REDIS_URL": settings.require_redis_url(),
        "PAYSUITE_DATABASE_PREFIX": settings.database_prefix,
        "PAYSUITE_STREAM_PREFIX": settings.stream_prefix,
        "COLUMNS": "200",
    }
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.output


def fields(event_type: str = "thing.happened") -> dict[str, str | bytes]:
    envelope = make_envelope(
        event_type=event_type,
        aggregate_type="thing",
        aggregate_id=str(uuid.uuid4()),
        aggregate_version=1,
        payload=events_pb2.AccountOpened(account_id="a", owner_id="o", currency="USD"),
        producer="test",
    )
    return {
        "event_id": envelope.event_id,
        "event_type": event_type,
        "envelope": envelope.SerializeToString(),
    }


@pytest.fixture
def streams(migrated: Settings) -> Iterator[Settings]:
    """Settings whose stream prefix no other test uses: `events pending` reads fixed names."""
    settings = migrated.model_copy(
        update={"stream_prefix": f"{migrated.stream_prefix}ops{uuid.uuid4().hex[:6]}."}
    )
    yield settings
    client = SyncRedis.from_url(settings.require_redis_url())
    keys = list(client.scan_iter(match=f"{settings.stream_prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def scratch_databases(migrated: Settings) -> Iterator[Settings]:
    """Service databases no relay publishes from, so unpublished rows stay unpublished."""
    from bench.suite import GATEWAY_DB, PAYMENT_DB, WALLET_DB

    settings = migrated.model_copy(
        update={"database_prefix": f"{migrated.database_prefix}ops{uuid.uuid4().hex[:6]}_"}
    )
    for database in (PAYMENT_DB, WALLET_DB, GATEWAY_DB):
        database.migrate(settings)
    yield settings
    for database in (PAYMENT_DB, WALLET_DB, GATEWAY_DB):
        db.drop_database(database.url(settings))


# --- outbox status -----------------------------------------------------------------------


def test_outbox_status_counts_unpublished_rows_and_their_age(scratch_databases: Settings) -> None:
    from bench.suite import PAYMENT_DB

    dsn = db.libpq_dsn(PAYMENT_DB.url(scratch_databases))
    with psycopg.connect(dsn) as conn:
        for age_s, published in ((90, False), (30, False), (10, False), (600, True)):
            conn.execute(
                "INSERT INTO outbox (event_id, stream, event_type, aggregate_type, aggregate_id,"
                " aggregate_version, envelope, created_at, published_at) VALUES (%s, 's', 't',"
                " 'a', 'id', 1, '', now() - make_interval(secs => %s),"
                " CASE WHEN %s THEN now() END)",
                (uuid.uuid4(), age_s, published),
            )
    code, output = cli(scratch_databases, "outbox", "status", "--stalled-after", "120")
    assert code == 0, output
    prefix = scratch_databases.database_prefix
    payments = next(line for line in output.splitlines() if f"{prefix}payments" in line)
    assert "│           3 │" in payments
    assert "90." in payments  # the oldest unpublished row, not the published one
    assert "ok" in payments
    wallets = next(line for line in output.splitlines() if f"{prefix}wallets" in line)
    assert "│           0 │" in wallets

    # Past the threshold (60 s by default) the same outbox is stalled, and the check fails.
    code, output = cli(scratch_databases, "outbox", "status")
    assert code == 1, output
    payments = next(line for line in output.splitlines() if f"{prefix}payments" in line)
    assert "stalled" in payments
    wallets = next(line for line in output.splitlines() if f"{prefix}wallets" in line)
    assert "stalled" not in wallets


def test_outbox_status_raises_an_alarm_for_a_stream_near_its_cap(
    scratch_databases: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ops, "STREAM_ALARM_LENGTH", 2)
    settings = scratch_databases.model_copy(
        update={"stream_prefix": f"{scratch_databases.stream_prefix}alarm{uuid.uuid4().hex[:6]}."}
    )
    client = SyncRedis.from_url(settings.require_redis_url())
    long_stream = settings.stream_prefix + GATEWAY_STREAM
    for _ in range(3):
        client.xadd(long_stream, fields())  # type: ignore[arg-type]  # redis-py's stub wants str-keyed fields; bytes keys are what Redis returns and takes
    try:
        code, output = cli(settings, "outbox", "status")
    finally:
        client.delete(long_stream)
        client.close()
    assert code == 0, output
    lines = output.splitlines()
    assert "ALARM: over 2 entries" in next(line for line in lines if long_stream in line)
    quiet = settings.stream_prefix + PAYMENT_STREAM
    assert "ok" in next(line for line in lines if quiet in line)


def test_outbox_status_fails_when_a_database_is_unreachable(migrated: Settings) -> None:
    missing = migrated.model_copy(update={"database_prefix": "nosuch_"})
    code, output = cli(missing, "outbox", "status")
    assert code == 1
    assert "unreachable" in output
    assert "Traceback" not in output


# --- events pending ----------------------------------------------------------------------


@pytest.mark.asyncio(loop_scope="session")
async def test_pending_reports_lag_pending_idle_and_dead_letters(
    redis: Redis, streams: Settings
) -> None:
    stream = streams.stream_prefix + PAYMENT_STREAM
    for _ in range(5):
        await redis.xadd(stream, fields())  # type: ignore[arg-type]  # redis-py's stub wants str-keyed fields; bytes keys are what Redis returns and takes
    await redis.xgroup_create(stream, "slow", id="0")
    await redis.xreadgroup("slow", "c1", {stream: ">"}, count=3)
    await redis.xgroup_create(stream, "caught-up", id="$")
    await redis.xadd(dead_letter_stream(stream), fields())  # type: ignore[arg-type]  # redis-py's stub wants str-keyed fields; bytes keys are what Redis returns and takes
    await asyncio.sleep(0.05)

    status = (await pending_status(redis, [stream]))[0]

    assert (status.length, status.dead_letters) == (5, 1)
    by_name = {g.group: g for g in status.groups}
    slow, caught_up = by_name["slow"], by_name["caught-up"]
    assert (slow.lag, slow.pending, slow.consumers) == (2, 3, 1)
    assert slow.oldest_idle_ms is not None
    assert slow.oldest_idle_ms >= 50
    assert (caught_up.lag, caught_up.pending, caught_up.oldest_idle_ms) == (0, 0, None)


def test_events_pending_lists_every_stream(streams: Settings) -> None:
    client = SyncRedis.from_url(streams.require_redis_url())
    stream = streams.stream_prefix + WALLET_STREAM
    client.xadd(stream, fields())  # type: ignore[arg-type]  # redis-py's stub wants str-keyed fields; bytes keys are what Redis returns and takes
    client.xgroup_create(stream, "ledger-readers", id="0")
    client.close()

    code, output = cli(streams, "events", "pending")

    assert code == 0, output
    assert "ledger-readers" in output
    assert f"{streams.stream_prefix}{PAYMENT_STREAM}" in output  # no group yet: still listed


def test_events_pending_says_stalled_when_entries_wait_past_the_threshold(
    streams: Settings,
) -> None:
    client = SyncRedis.from_url(streams.require_redis_url())
    stream = streams.stream_prefix + GATEWAY_STREAM
    client.xadd(stream, fields(), id="1000-0")  # type: ignore[arg-type]  # added long ago
    client.xgroup_create(stream, "asleep", id="0")
    client.xadd(streams.stream_prefix + WALLET_STREAM, fields())  # type: ignore[arg-type]  # redis-py's stub wants str-keyed fields; bytes keys are what Redis returns and takes
    client.xgroup_create(streams.stream_prefix + WALLET_STREAM, "awake", id="$")
    client.close()

    code, output = cli(streams, "events", "pending")

    assert code == 1, output
    lines = output.splitlines()
    assert "stalled" in next(line for line in lines if "asleep" in line)
    assert "stalled" not in next(line for line in lines if "awake" in line)
    assert "Redis memory:" in output


def test_events_pending_fails_briefly_when_redis_is_down(migrated: Settings) -> None:
    down = migrated.model_copy(update={"redis_url": "redis://127.0.0.1:1"})
    code, output = cli(down, "events", "pending")
    assert code == 2  # unreachable, not refused
    assert "cannot reach Redis:" in output
    assert output.count("\n") == 1
    assert "Traceback" not in output


# --- events dlq --------------------------------------------------------------------------


def park(client: SyncRedis, stream: str, count: int) -> list[str]:
    ids = []
    for i in range(count):
        parked = {
            **fields(),
            "source_stream": stream,
            "source_id": f"{i + 1}-0",
            "group": "payments",
            "error": "ValueError('bad')",
        }
        ids.append(client.xadd(dead_letter_stream(stream), parked).decode())  # type: ignore[arg-type, union-attr]  # redis-py's stub wants str-keyed fields; bytes keys are what Redis returns and takes
    return ids


def test_dlq_list_shows_the_dead_letters(streams: Settings) -> None:
    client = SyncRedis.from_url(streams.require_redis_url())
    ids = park(client, streams.stream_prefix + PAYMENT_STREAM, 3)
    client.close()

    code, output = cli(streams, "events", "dlq", "list", "payment", "--limit", "2")

    assert code == 0, output
    assert ids[0] in output
    assert ids[1] in output
    assert ids[2] not in output
    assert "ValueError('bad')" in output


def test_dlq_replay_puts_the_original_entry_back_and_removes_it(streams: Settings) -> None:
    client = SyncRedis.from_url(streams.require_redis_url())
    stream = streams.stream_prefix + PAYMENT_STREAM
    first, second = park(client, stream, 2)
    parked = client.xrange(dead_letter_stream(stream), min=first, max=first)[0][1]  # type: ignore[index]  # the sync client's reply is typed as a union

    code, output = cli(streams, "events", "dlq", "replay", "payment", first)

    assert code == 0, output
    replayed = client.xrange(stream)  # type: ignore[union-attr]  # the sync client's reply is typed as a union
    assert len(replayed) == 1
    assert replayed[0][1] == {  # type: ignore[index]  # the sync client's reply is typed as a union
        k: v for k, v in parked.items() if k in (b"event_id", b"event_type", b"envelope")
    }
    remaining = [entry_id.decode() for entry_id, _ in client.xrange(dead_letter_stream(stream))]  # type: ignore[union-attr]  # the sync client's reply is typed as a union
    assert remaining == [second]
    client.close()


def test_dlq_replay_all_and_drop_all(streams: Settings) -> None:
    client = SyncRedis.from_url(streams.require_redis_url())
    payment, wallet = (streams.stream_prefix + s for s in (PAYMENT_STREAM, WALLET_STREAM))
    park(client, payment, 3)
    park(client, wallet, 2)

    replay_code, replay_output = cli(streams, "events", "dlq", "replay", "payment", "--all")
    drop_code, drop_output = cli(streams, "events", "dlq", "drop", wallet, "--all")

    assert (replay_code, drop_code) == (0, 0), replay_output + drop_output
    assert "replayed 3 dead letters" in replay_output
    assert "dropped 2 dead letters" in drop_output
    assert client.xlen(payment) == 3
    assert client.xlen(dead_letter_stream(payment)) == 0
    assert client.xlen(wallet) == 0
    assert client.xlen(dead_letter_stream(wallet)) == 0
    client.close()


def test_dlq_commands_refuse_an_unknown_entry_or_a_missing_choice(streams: Settings) -> None:
    missing_code, missing_output = cli(streams, "events", "dlq", "drop", "payment", "1-1")
    neither_code, neither_output = cli(streams, "events", "dlq", "replay", "payment")
    assert missing_code == 1
    assert "no entry 1-1" in missing_output
    assert neither_code == 2
    assert "ENTRY_ID or --all" in neither_output


@pytest.mark.asyncio(loop_scope="session")
async def test_a_poison_event_replayed_from_the_dlq_is_handled_with_its_event_id(
    redis: Redis, streams: Settings
) -> None:
    stream = streams.stream_prefix + PAYMENT_STREAM
    original = fields("payment.completed")
    await redis.xadd(stream, original)  # type: ignore[arg-type]  # redis-py's stub wants str-keyed fields; bytes keys are what Redis returns and takes
    handled: list[str] = []
    broken = True

    async def handler(envelope: events_pb2.EventEnvelope) -> None:
        if broken:
            raise ValueError("poison")
        handled.append(envelope.event_id)

    consumer = StreamConsumer(
        redis, stream=stream, group="g", handler=handler, block_ms=50, max_deliveries=1
    )
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        await _until(lambda: redis.xlen(dead_letter_stream(stream)), 1)
        broken = False
        assert await replay(redis, stream, None) == 1
        await _until(lambda: _count(handled), 1)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
    assert handled == [original["event_id"]]
    assert await redis.xlen(dead_letter_stream(stream)) == 0


async def _count(items: list[str]) -> int:
    return len(items)


async def _until(read: object, expected: int, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while await read() != expected:  # type: ignore[operator]  # read is any of the tests' async readers
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)

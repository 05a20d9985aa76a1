"""Consumer groups on a real Redis: ack after the effect, reclaim from dead consumers, park
poison messages on the dead-letter stream."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from common.config import Settings
from common.errors import DependencyUnavailable
from common.events import dead_letter_stream, make_envelope
from common.streams import StreamConsumer
from paysuite.events.v1 import events_pb2

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def publish(
    redis: Redis, stream: str, name: str = "thing.happened", *, typed: bool = False
) -> str:
    envelope = make_envelope(
        event_type=name,
        aggregate_type="test",
        aggregate_id="a",
        aggregate_version=1,
        payload=events_pb2.AccountOpened(account_id="a"),
        producer="test",
    )
    fields = {"event_id": envelope.event_id, "envelope": envelope.SerializeToString()}
    if typed:  # as the relay writes it
        fields["event_type"] = name
    await redis.xadd(stream, fields)  # type: ignore[arg-type]  # redis-py's stub wants one value type
    return envelope.event_id


def stream_name(settings: Settings) -> str:
    return f"{settings.stream_prefix}test.{uuid.uuid4()}"


async def pending(redis: Redis, stream: str, group: str) -> int:
    info = await redis.xpending(stream, group)
    return int(info["pending"])


async def test_a_handled_event_is_acknowledged(redis: Redis, migrated: Settings) -> None:
    stream = stream_name(migrated)
    seen: list[str] = []

    async def handler(envelope: events_pb2.EventEnvelope) -> None:
        seen.append(envelope.event_id)

    consumer = StreamConsumer(redis, stream=stream, group="g", handler=handler, block_ms=10)
    await consumer.ensure_group()
    event_id = await publish(redis, stream)
    await consumer.poll_once()
    assert seen == [event_id]
    assert await pending(redis, stream, "g") == 0


async def test_entries_of_a_type_the_handler_does_not_act_on_are_acknowledged_unread(
    redis: Redis, migrated: Settings
) -> None:
    stream = stream_name(migrated)
    seen: list[str] = []

    async def handler(envelope: events_pb2.EventEnvelope) -> None:
        seen.append(envelope.event_type)

    consumer = StreamConsumer(
        redis,
        stream=stream,
        group="g",
        handler=handler,
        block_ms=10,
        handles=lambda event_type: event_type == "thing.wanted",
    )
    await consumer.ensure_group()
    await publish(redis, stream, "thing.ignored", typed=True)
    await publish(redis, stream, "thing.wanted", typed=True)
    await publish(redis, stream, "thing.untyped")  # no type beside it: handled, to be safe
    await consumer.poll_once()
    assert seen == ["thing.wanted", "thing.untyped"]
    assert await pending(redis, stream, "g") == 0
    skipped = REGISTRY.get_sample_value(
        "stream_events_handled_total", {"stream": stream, "group": "g", "result": "skipped"}
    )
    assert skipped == 1


async def test_entries_of_a_dead_consumer_are_reclaimed(redis: Redis, migrated: Settings) -> None:
    stream = stream_name(migrated)
    handled: list[str] = []

    async def crash(envelope: events_pb2.EventEnvelope) -> None:
        raise RuntimeError("process died mid-flight")

    async def handler(envelope: events_pb2.EventEnvelope) -> None:
        handled.append(envelope.event_id)

    dead = StreamConsumer(redis, stream=stream, group="g", handler=crash, block_ms=10, name="a")
    await dead.ensure_group()
    event_id = await publish(redis, stream)
    await dead.poll_once()
    assert await pending(redis, stream, "g") == 1

    alive = StreamConsumer(
        redis, stream=stream, group="g", handler=handler, block_ms=10, claim_idle_ms=20, name="b"
    )
    await asyncio.sleep(0.05)  # longer than claim_idle_ms: the entry now counts as abandoned
    await alive.poll_once()
    assert handled == [event_id]
    assert await pending(redis, stream, "g") == 0


async def test_an_event_that_keeps_failing_is_dead_lettered(
    redis: Redis, migrated: Settings
) -> None:
    stream = stream_name(migrated)

    async def failing(envelope: events_pb2.EventEnvelope) -> None:
        raise ValueError("cannot handle this")

    consumer = StreamConsumer(
        redis, stream=stream, group="g", handler=failing, block_ms=10, claim_idle_ms=1,
        max_deliveries=3,
    )  # fmt: skip
    await consumer.ensure_group()
    event_id = await publish(redis, stream)
    for _ in range(4):
        await consumer.poll_once()
        await asyncio.sleep(0.01)  # let the pending entry idle past claim_idle_ms
    parked = await redis.xrange(dead_letter_stream(stream))
    assert [fields[b"event_id"].decode() for _id, fields in parked] == [event_id]
    assert b"cannot handle this" in parked[0][1][b"error"]
    assert await pending(redis, stream, "g") == 0


async def test_an_unparseable_entry_is_dead_lettered_at_once(
    redis: Redis, migrated: Settings
) -> None:
    stream = stream_name(migrated)
    calls = 0

    async def handler(envelope: events_pb2.EventEnvelope) -> None:
        nonlocal calls
        calls += 1

    consumer = StreamConsumer(redis, stream=stream, group="g", handler=handler, block_ms=10)
    await consumer.ensure_group()
    await redis.xadd(stream, {"envelope": b"\xff\xfe not protobuf"})
    await consumer.poll_once()
    assert calls == 0
    assert len(await redis.xrange(dead_letter_stream(stream))) == 1
    assert await pending(redis, stream, "g") == 0


async def test_an_outage_of_a_dependency_never_dead_letters(
    redis: Redis, migrated: Settings
) -> None:
    stream = stream_name(migrated)

    async def wallet_down(envelope: events_pb2.EventEnvelope) -> None:
        raise DependencyUnavailable("wallet unavailable")

    consumer = StreamConsumer(
        redis, stream=stream, group="g", handler=wallet_down, block_ms=10, claim_idle_ms=1,
        max_deliveries=2,
    )  # fmt: skip
    await consumer.ensure_group()
    await publish(redis, stream)
    for _ in range(5):
        await consumer.poll_once()
        await asyncio.sleep(0.01)
    assert await redis.xrange(dead_letter_stream(stream)) == []
    assert await pending(redis, stream, "g") == 1


async def test_results_are_counted_and_depths_sampled(redis: Redis, migrated: Settings) -> None:
    stream = stream_name(migrated)
    outcomes: list[Exception | None] = [None, RuntimeError("a bug"), DependencyUnavailable("down")]

    async def handler(envelope: events_pb2.EventEnvelope) -> None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    consumer = StreamConsumer(
        redis, stream=stream, group="g", handler=handler, block_ms=10, max_deliveries=1
    )
    await consumer.ensure_group()
    for _ in range(3):
        await publish(redis, stream)
    await consumer.poll_once()
    await consumer.sample_depths()

    def value(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"stream": stream, **labels})

    results = ["ok", "dead_lettered", "retry"]
    assert [value("stream_events_handled_total", group="g", result=r) for r in results] == [1] * 3
    assert value("stream_event_handling_seconds_count", group="g") == 3
    assert value("stream_pending", group="g") == 1  # the one to retry
    assert value("stream_dead_letter_length") == 1

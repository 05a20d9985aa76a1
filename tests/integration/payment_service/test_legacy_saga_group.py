"""The saga's old consumer group on the public payment stream, against a real Redis: destroyed
once none of its consumers reads any more (so the stream can be trimmed again), kept while one
still does (an old replica during a rolling upgrade), and other groups are never touched."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from redis.asyncio import Redis

from payment_service.adapters.legacy_saga_group import LegacySagaGroup
from payment_service.entrypoints.payment_events import GROUP as SAGA_GROUP
from tests.conftest import Suite

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def public_stream(suite: Suite, redis: Redis) -> str:
    """A stream with the old saga group, one entry it read and one it never did, and
    another group beside it."""
    stream = f"{suite.settings.stream_prefix}legacy-{uuid.uuid4().hex[:8]}"
    await redis.xadd(stream, {b"event_type": b"payment.pending"})
    await redis.xgroup_create(stream, SAGA_GROUP, id="0")
    await redis.xgroup_create(stream, "someone-else", id="0")
    await redis.xreadgroup(SAGA_GROUP, "old-replica", {stream: ">"}, count=1)
    await redis.xadd(stream, {b"event_type": b"payment.completed"})
    return stream


async def groups(redis: Redis, stream: str) -> set[str]:
    return {g["name"].decode() for g in await redis.xinfo_groups(stream)}


async def test_an_idle_group_is_retired_and_no_other(suite: Suite, redis: Redis) -> None:
    stream = await public_stream(suite, redis)
    legacy = LegacySagaGroup(redis, stream=stream, group=SAGA_GROUP, idle_after=timedelta(0))
    assert await legacy.retire_if_idle()
    assert await groups(redis, stream) == {"someone-else"}
    assert not await legacy.retire_if_idle()  # nothing left to retire


async def test_a_group_an_old_replica_still_reads_is_kept(suite: Suite, redis: Redis) -> None:
    stream = await public_stream(suite, redis)
    legacy = LegacySagaGroup(
        redis, stream=stream, group=SAGA_GROUP, idle_after=timedelta(minutes=1)
    )
    assert not await legacy.retire_if_idle()
    assert await groups(redis, stream) == {SAGA_GROUP, "someone-else"}


async def test_no_stream_no_group_is_nothing_to_do(suite: Suite, redis: Redis) -> None:
    stream = f"{suite.settings.stream_prefix}absent-{uuid.uuid4().hex[:8]}"
    assert not await LegacySagaGroup(redis, stream=stream, group=SAGA_GROUP).retire_if_idle()
    await redis.xadd(stream, {b"event_type": b"payment.pending"})
    assert not await LegacySagaGroup(redis, stream=stream, group=SAGA_GROUP).retire_if_idle()

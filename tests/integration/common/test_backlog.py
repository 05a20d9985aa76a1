"""The backlog admission control reads, on a real Redis: pending plus lag of the named groups
only (the embedded Redis 6 reports no lag, so it is counted, up to the cap; Redis 7, as in
CI's external server, reports it)."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio import Redis

from common.backlog import BACKLOG, BacklogSampler, Group

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def test_the_backlog_is_pending_plus_lag_of_the_named_groups(redis: Redis) -> None:
    stream = f"admission-test.{uuid.uuid4().hex[:8]}"
    try:
        for _ in range(5):
            await redis.xadd(stream, {b"k": b"v"})
        await redis.xgroup_create(stream, "driving", id="0")
        await redis.xgroup_create(stream, "other", id="0")  # not named: not counted
        sampler = BacklogSampler(redis, [Group(stream, "driving")], count_cap=100)
        assert await sampler.sample() == 5  # all lag
        await redis.xreadgroup("driving", "c1", {stream: ">"}, count=2)
        assert await sampler.sample() == 5  # 2 pending + 3 lag
        assert sampler.current() == 5
        assert BACKLOG._value.get() == 5
        capped = BacklogSampler(redis, [Group(stream, "driving")], count_cap=2)
        reports_lag = any(info.get("lag") is not None for info in await redis.xinfo_groups(stream))
        # Redis 7 reports the lag itself, exactly; Redis 6 (the embedded one) has it counted,
        # up to the cap: 2 pending + 2 counted.
        assert await capped.sample() == (5 if reports_lag else 4)
        entries = await redis.xreadgroup("driving", "c1", {stream: ">"})
        ids = [entry_id for _, batch in entries for entry_id, _ in batch]
        await redis.xack(stream, "driving", *ids)
        assert await sampler.sample() == 2  # the first two are still pending
    finally:
        await redis.delete(stream)


async def test_a_stream_not_made_yet_has_no_backlog(redis: Redis) -> None:
    sampler = BacklogSampler(
        redis, [Group(f"admission-test.{uuid.uuid4().hex}", "g")], count_cap=10
    )
    assert await sampler.sample() == 0


async def test_a_stale_sample_counts_as_no_backlog(redis: Redis) -> None:
    stream = f"admission-test.{uuid.uuid4().hex[:8]}"
    now = [0.0]
    try:
        await redis.xadd(stream, {b"k": b"v"})
        await redis.xgroup_create(stream, "g", id="0")
        sampler = BacklogSampler(redis, [Group(stream, "g")], count_cap=10, clock=lambda: now[0])
        assert sampler.current() == 0  # never sampled
        await sampler.sample()
        assert sampler.current() == 1
        now[0] = 60.0  # the sampler stopped sampling (Redis down): unknown is not overloaded
        assert sampler.current() == 0
    finally:
        await redis.delete(stream)


async def test_queued_for_is_the_age_of_the_oldest_entry_not_yet_delivered(redis: Redis) -> None:
    stream = f"admission-test.{uuid.uuid4().hex[:8]}"
    try:
        seconds, micros = await redis.time()
        now_ms = seconds * 1000 + micros // 1000
        # Entries written 3 s and 1 s ago (explicit ids carry their time), then one now.
        await redis.xadd(stream, {b"k": b"old"}, id=f"{now_ms - 3000}-0")
        await redis.xadd(stream, {b"k": b"mid"}, id=f"{now_ms - 1000}-0")
        await redis.xadd(stream, {b"k": b"new"})
        await redis.xgroup_create(stream, "g", id="0")
        sampler = BacklogSampler(redis, [Group(stream, "g")], count_cap=10)
        await sampler.sample()
        assert 3000 <= sampler.queued_ms() < 4000
        # Delivered but not acknowledged (say retried through an outage): no longer queued.
        await redis.xreadgroup("g", "c1", {stream: ">"}, count=1)
        await sampler.sample()
        assert 1000 <= sampler.queued_ms() < 2000
        await redis.xreadgroup("g", "c1", {stream: ">"})
        await sampler.sample()
        assert sampler.queued_ms() == 0
        assert sampler.current() == 3  # all three pending
    finally:
        await redis.delete(stream)

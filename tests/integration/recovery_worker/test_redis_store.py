"""The worker's Redis bookkeeping and its read of the event pipeline, on a real Redis."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from common.errors import DependencyUnavailable
from recovery_worker.adapters.redis_store import RedisLeases, RedisPipeline, RedisRungMemory
from recovery_worker.bootstrap import Connections
from recovery_worker.domain.model import SweepStatus
from tests.integration.recovery_worker.conftest import Rig, later, sweep

pytestmark = [pytest.mark.integration]


def leases(redis: Redis, prefix: str, ttl_s: float = 30, owner: str = "") -> RedisLeases:
    """A worker's leases; each call is another replica unless `owner` names the same one."""
    owner = owner or f"replica-{uuid.uuid4().hex[:8]}"
    return RedisLeases(redis, prefix=prefix, ttl=timedelta(seconds=ttl_s), owner=owner)


async def test_a_lease_has_one_holder_and_is_free_again_after_it(
    rig: Rig, connections: Connections
) -> None:
    one = leases(connections.redis, rig.settings.stream_prefix)
    two = leases(connections.redis, rig.settings.stream_prefix)

    async with one.hold("lease-test") as first:
        async with two.hold("lease-test") as second:
            assert (first, second) == (True, False)
        assert await connections.redis.pttl(one.key("lease-test")) > 0
    async with two.hold("lease-test") as again:
        assert again

    assert not await connections.redis.exists(one.key("lease-test"))


async def test_a_restarted_worker_takes_over_its_killed_predecessors_lease_at_once(
    rig: Rig, connections: Connections
) -> None:
    redis, prefix = connections.redis, rig.settings.stream_prefix
    killed = leases(redis, prefix, owner="host-recovery")
    holding = killed.hold("killed-holder")
    assert await holding.__aenter__()  # and then the process died, its lease left behind

    other_replica = leases(redis, prefix, owner="host-recovery-2")
    async with other_replica.hold("killed-holder") as taken:
        assert not taken  # another live replica's lease is never taken
    restarted = leases(redis, prefix, owner="host-recovery")
    async with restarted.hold("killed-holder") as taken:
        assert taken
        async with restarted.hold("killed-holder") as twice:
            assert not twice  # nor its own live one

    await holding.__aexit__(None, None, None)


async def test_a_lease_whose_release_failed_is_released_before_it_is_next_asked_for(
    rig: Rig, connections: Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis restarted (with its data) while a sweep ran: the sweep failed, and so did the
    release of its lease. The same live worker must get the lease at its next round, not
    report BUSY until its ttl ran out (chaos seed 102: pending payments waited 45 s)."""
    redis, prefix = connections.redis, rig.settings.stream_prefix
    worker = leases(redis, prefix, owner="host-recovery")

    async def restarting(*args: object) -> object:
        raise RedisConnectionError("Connection closed by server.")

    async def sweep_cut_short() -> None:
        async with worker.hold("unreleased") as held:
            assert held
            monkeypatch.setattr(redis, "eval", restarting)
            raise DependencyUnavailable("redis unavailable: ConnectionError")

    with pytest.raises(DependencyUnavailable):
        await sweep_cut_short()
    assert await redis.exists(worker.key("unreleased"))  # left behind, for the ttl
    monkeypatch.undo()  # Redis is back

    async with worker.hold("unreleased") as again:
        assert again
        async with leases(redis, prefix).hold("unreleased") as other:
            assert not other  # released for its owner, not for anyone else


async def test_a_holder_whose_lease_expired_never_frees_the_next_holders(
    rig: Rig, connections: Connections
) -> None:
    redis, prefix = connections.redis, rig.settings.stream_prefix
    stale = leases(redis, prefix)
    async with stale.hold("taken-over") as held:
        assert held
        # Its lease ran out (a long pause) and another worker claimed the sweep.
        await redis.set(stale.key("taken-over"), "someone-else")

    assert await redis.get(stale.key("taken-over")) == b"someone-else"


async def test_the_ladder_memory_forgets_a_rung_once_the_payment_changed(
    rig: Rig, connections: Connections
) -> None:
    memory = RedisRungMemory(connections.redis, prefix=rig.settings.stream_prefix)
    payment_id, changed = str(uuid.uuid4()), datetime.now(UTC)

    await memory.remember(payment_id, since=changed, rung=2)

    assert await memory.last_tried(payment_id, since=changed) == 2
    assert await memory.last_tried(payment_id, since=changed + timedelta(seconds=1)) is None


async def test_stalled_entries_and_dead_letters_are_reported(
    rig: Rig, connections: Connections
) -> None:
    redis = connections.redis
    stream = f"{rig.settings.stream_prefix}paysuite.wallet.events"
    group = f"stalled-{uuid.uuid4().hex[:6]}"
    await redis.xgroup_create(stream, group, id="$", mkstream=True)
    await redis.xadd(stream, {"envelope": b"x"})
    await redis.xreadgroup(group, "gone-consumer", {stream: ">"}, count=1)  # never acked
    await redis.xadd(f"{stream}.dlq", {"error": b"poison"})
    try:
        [health] = await RedisPipeline(redis).health([stream], stalled_ms=0)
        report = await sweep(rig, connections, "pipeline").run_once(later())
    finally:
        await redis.xgroup_destroy(stream, group)
        await redis.delete(f"{stream}.dlq")

    ours = next(g for g in health.groups if g.group == group)
    assert (ours.pending, ours.stalled, health.dead_letters) == (1, 1, 1)
    # The sweep's threshold (300 s) has not passed for that entry: only the dead letter.
    assert report.status is SweepStatus.DONE
    assert report.notes == (f"{stream}.dlq: 1 dead letters",)


async def test_a_redis_that_does_not_answer_is_dependency_unavailable(tmp_path: object) -> None:
    redis = Redis.from_url(f"unix://{tmp_path}/nothing.sock")
    try:
        with pytest.raises(DependencyUnavailable, match="redis unavailable"):
            async with leases(redis, "x.").hold("any"):
                pass
    finally:
        await redis.aclose()


async def test_a_lease_is_renewed_while_its_sweep_runs_past_the_ttl(
    rig: Rig, connections: Connections
) -> None:
    short = leases(connections.redis, rig.settings.stream_prefix, ttl_s=0.3)
    other = leases(connections.redis, rig.settings.stream_prefix)

    async with short.hold("long-sweep") as held:
        await asyncio.sleep(0.8)  # well past the ttl: only renewal keeps it
        async with other.hold("long-sweep") as stolen:
            assert (held, stolen) == (True, False)


async def test_a_group_whose_oldest_unread_entry_waits_past_the_threshold_is_stalled(
    rig: Rig, connections: Connections
) -> None:
    redis = connections.redis
    stream = f"{rig.settings.stream_prefix}test.unread.{uuid.uuid4().hex[:6]}"
    await redis.xadd(stream, {"envelope": b"x"}, id="1000-0")  # added long ago, never read
    await redis.xgroup_create(stream, "asleep", id="0")
    try:
        [old] = await RedisPipeline(redis).health([stream], stalled_ms=60_000)
        await redis.xadd(stream, {"envelope": b"y"})
        await redis.xgroup_setid(stream, "asleep", id="1000-0")  # the old one was read
        [fresh] = await RedisPipeline(redis).health([stream], stalled_ms=60_000)
    finally:
        await redis.delete(stream)
    assert old.groups[0].is_stalled
    assert (fresh.groups[0].lag, fresh.groups[0].is_stalled) == (1, False)

"""How a stream consumer takes over entries after a crash, with a small in-memory Redis:
a restarted replica (same name) at once, a dead one (no heartbeat) once idle, a live one never.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, cast

from redis.asyncio import Redis

from common.errors import DependencyUnavailable
from common.streams import MIN_BACKOFF_S, StreamConsumer, heartbeat_key
from paysuite.events.v1 import events_pb2

STREAM = "s"
GROUP = "g"


@dataclass
class _Pending:
    owner: str
    delivered_at: float
    deliveries: int = 1


@dataclass
class FakeRedis:
    """The commands StreamConsumer uses, for one stream and group; `now` is Redis' clock in
    seconds, moved by the test (idle times are measured from it)."""

    now: float = 0.0
    entries: list[tuple[bytes, dict[bytes, bytes]]] = field(default_factory=list)
    pel: dict[bytes, _Pending] = field(default_factory=dict)
    last_delivered: int = -1
    keys: dict[str, float] = field(default_factory=dict)  # key -> expiry time

    def add(self, aggregate: str) -> bytes:
        entry_id = f"1-{len(self.entries)}".encode()
        envelope = events_pb2.EventEnvelope(event_id=entry_id.decode(), aggregate_id=aggregate)
        fields = {b"envelope": envelope.SerializeToString(), b"aggregate_id": aggregate.encode()}
        self.entries.append((entry_id, fields))
        return entry_id

    def owners(self) -> dict[bytes, str]:
        return {entry_id: pending.owner for entry_id, pending in self.pel.items()}

    # -- redis.asyncio.Redis, as far as the consumer goes --------------------------------

    async def xgroup_create(self, *_args: Any, **_kwargs: Any) -> None:
        return None

    async def xreadgroup(
        self, group: str, consumer: str, streams: dict[str, str], count: int, block: Any
    ) -> list[Any]:
        start = streams[STREAM]
        if start == ">":
            fresh = self.entries[self.last_delivered + 1 :][:count]
            for entry_id, _ in fresh:
                self.pel[entry_id] = _Pending(consumer, self.now)
            self.last_delivered += len(fresh)
            if not fresh and block is not None:
                await asyncio.sleep(block / 1000)
            return [[STREAM.encode(), fresh]] if fresh else []
        own = [
            (entry_id, fields)
            for entry_id, fields in self.entries
            if entry_id in self.pel
            and self.pel[entry_id].owner == consumer
            and _seq(entry_id) > _seq(start)
        ][:count]
        for entry_id, _ in own:
            self.pel[entry_id].delivered_at = self.now
        return [[STREAM.encode(), own]]

    async def xpending_range(
        self, stream: str, group: str, start: str, end: str, count: int, idle: int
    ) -> list[dict[str, Any]]:
        first = -1 if start == "-" else _seq(start.encode())
        return [
            {"message_id": entry_id, "consumer": p.owner.encode(), "times_delivered": 1}
            for entry_id, p in sorted(self.pel.items(), key=lambda item: _seq(item[0]))
            if _seq(entry_id) >= first and (self.now - p.delivered_at) * 1000 >= idle
        ][:count]

    async def xclaim(
        self, stream: str, group: str, consumer: str, idle: int, ids: list[str], justid: bool
    ) -> list[bytes]:
        claimed = [
            entry_id
            for entry_id in (entry_id.encode() for entry_id in ids)
            if entry_id in self.pel and (self.now - self.pel[entry_id].delivered_at) * 1000 >= idle
        ]
        for entry_id in claimed:
            self.pel[entry_id] = _Pending(consumer, self.now)
        return claimed

    async def set(self, key: str, value: object, px: int) -> None:
        self.keys[key] = self.now + px / 1000

    async def delete(self, key: str) -> None:
        self.keys.pop(key, None)

    def alive(self, key: str) -> bool:
        return self.keys.get(key, -1.0) > self.now

    def pipeline(self, transaction: bool = False) -> _Pipeline:
        return _Pipeline(self)


@dataclass
class _Pipeline:
    redis: FakeRedis
    results: list[Any] = field(default_factory=list)

    def exists(self, key: str) -> None:
        self.results.append(int(self.redis.alive(key)))

    def xinfo_groups(self, stream: str) -> None:
        self.results.append([{"name": GROUP, "pending": len(self.redis.pel), "lag": 0}])

    def xlen(self, stream: str) -> None:
        self.results.append(0)

    def xadd(self, stream: str, fields: object) -> None:
        self.results.append(b"1-0")

    def xack(self, stream: str, group: str, *ids: bytes) -> None:
        for entry_id in ids:
            self.redis.pel.pop(entry_id, None)
        self.results.append(len(ids))

    def hdel(self, key: str, *fields: str) -> None:
        self.results.append(0)

    async def execute(self) -> list[Any]:
        return self.results


def _seq(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[2] or -1) if text != "0" else -1


class Recorder:
    def __init__(self) -> None:
        self.handled: list[str] = []

    async def __call__(self, envelope: events_pb2.EventEnvelope) -> None:
        self.handled.append(envelope.event_id)


def consumer(redis: FakeRedis, name: str, handler: Recorder, **kwargs: Any) -> StreamConsumer:
    return StreamConsumer(
        cast(Redis, redis),
        stream=STREAM,
        group=GROUP,
        handler=handler,
        name=name,
        claim_idle_ms=5000,
        block_ms=1,
        **kwargs,
    )


async def _crash_holding(redis: FakeRedis, name: str, count: int) -> list[bytes]:
    """A consumer called `name` reads `count` entries and dies before acknowledging them."""
    ids = [redis.add(f"agg-{i}") for i in range(count)]
    await redis.xreadgroup(GROUP, name, {STREAM: ">"}, count=count, block=None)
    return ids


async def test_a_restarted_replica_takes_over_its_predecessors_entries_at_once() -> None:
    redis = FakeRedis()
    held = await _crash_holding(redis, "payment", 3)
    newer = redis.add("agg-new")
    recorder = Recorder()

    heir = consumer(redis, "payment", recorder)
    await heir.poll_once()  # no time has passed: nothing is idle yet

    assert recorder.handled == [entry_id.decode() for entry_id in held]
    assert redis.pel == {}
    await heir.poll_once()
    assert recorder.handled[-1] == newer.decode()


async def test_the_predecessors_list_is_read_to_its_end_page_by_page() -> None:
    redis = FakeRedis()
    held = await _crash_holding(redis, "payment", 7)
    recorder = Recorder()

    heir = consumer(redis, "payment", recorder, batch_size=3)
    for _ in range(3):
        await heir.poll_once()

    assert sorted(recorder.handled) == sorted(entry_id.decode() for entry_id in held)
    assert redis.pel == {}


async def test_a_live_consumer_is_never_robbed_however_long_it_holds_an_entry() -> None:
    redis = FakeRedis()
    held = await _crash_holding(redis, "slow", 1)
    redis.now = 58.0
    await redis.set(heartbeat_key(STREAM, GROUP, "slow"), 1, px=5000)  # renewed all along
    redis.now = 60.0  # its entry is idle far past the claim idle time
    recorder = Recorder()

    other = consumer(redis, "other", recorder)
    await other.poll_once()

    assert recorder.handled == []
    assert redis.owners() == {held[0]: "slow"}


async def test_a_dead_consumers_entries_are_claimed_once_idle() -> None:
    redis = FakeRedis()
    held = await _crash_holding(redis, "gone", 2)
    await redis.set(heartbeat_key(STREAM, GROUP, "gone"), 1, px=5000)
    recorder = Recorder()
    other = consumer(redis, "other", recorder)

    redis.now = 4.0  # not idle long enough, and its heartbeat has not lapsed yet
    await other.poll_once()
    assert recorder.handled == []

    redis.now = 5.5
    other._next_claim = 0.0  # the claim timer is due
    await other.poll_once()
    assert sorted(recorder.handled) == sorted(entry_id.decode() for entry_id in held)
    assert redis.pel == {}


async def test_a_running_consumer_keeps_its_heartbeat_and_drops_it_when_stopped() -> None:
    redis = FakeRedis()
    recorder = Recorder()
    running = consumer(redis, "payment", recorder)
    key = heartbeat_key(STREAM, GROUP, "payment")
    stop = asyncio.Event()
    task = asyncio.create_task(running.run(stop))
    for _ in range(100):
        if key in redis.keys:
            break
        await asyncio.sleep(0.01)
    assert redis.keys[key] == 5.0  # renewed every third of its lifetime

    stop.set()
    await task
    assert key not in redis.keys


async def test_the_retry_backoff_grows_once_per_round_however_many_entries_failed() -> None:
    redis = FakeRedis()
    for i in range(16):
        redis.add(f"agg-{i}")

    async def wallet_down(envelope: events_pb2.EventEnvelope) -> None:
        raise DependencyUnavailable("wallet unavailable")

    down = StreamConsumer(
        cast(Redis, redis), stream=STREAM, group=GROUP, handler=wallet_down, name="payment"
    )
    await down.poll_once()

    assert len(redis.pel) == 16  # all left pending, to be retried
    assert down._backoff_s == 2 * MIN_BACKOFF_S  # one round: doubled once, not sixteen times

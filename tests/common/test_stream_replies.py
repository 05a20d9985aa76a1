"""The stream consumer reads every reply Redis can give without falling over: trimmed entries
come back without fields (or as nil), XAUTOCLAIM names deleted ids, XINFO can be empty."""

from __future__ import annotations

from typing import Any, cast

from redis.asyncio import Redis

from common.streams import StreamConsumer
from paysuite.events.v1 import events_pb2


class FakePipeline:
    def __init__(self, redis: FakeRedis) -> None:
        self._redis = redis
        self._calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        def queue(*args: Any, **_kwargs: Any) -> FakePipeline:
            self._calls.append((name, args))
            return self

        return queue

    async def execute(self) -> list[Any]:
        results = []
        for name, args in self._calls:
            self._redis.calls.append((name, args))
            results.append(self._redis.replies.get(name))
        return results


class FakeRedis:
    def __init__(self, claimed: Any, read: Any = None) -> None:
        self.claimed = claimed
        self.read = read
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.replies: dict[str, Any] = {"xinfo_groups": None, "xlen": None}

    async def xautoclaim(self, *_args: Any) -> Any:
        return self.claimed

    async def xreadgroup(self, *_args: Any, **_kwargs: Any) -> Any:
        return self.read

    async def hdel(self, *args: Any) -> int:
        self.calls.append(("hdel", args))
        return 0

    def pipeline(self, *, transaction: bool = True) -> FakePipeline:
        return FakePipeline(self)


handled: list[str] = []


async def handler(envelope: events_pb2.EventEnvelope) -> None:
    handled.append(envelope.event_id)


def consumer(redis: FakeRedis) -> StreamConsumer:
    return StreamConsumer(cast(Redis, redis), stream="s", group="g", handler=handler, name="c")


async def test_reclaimed_entries_trimmed_from_the_stream_are_acknowledged_and_dropped() -> None:
    redis = FakeRedis([b"0-0", [(b"1-0", {}), (b"2-0", None), (None, None)], [b"3-0"]])

    assert await consumer(redis).poll_once() == 2  # the nil entry without an id is skipped

    acked = [args for name, args in redis.calls if name == "xack"]
    assert acked == [("s", "g", b"1-0", b"2-0")]
    # Redis dropped 3-0 from the pending list itself: only its failure counter is forgotten.
    assert ("hdel", ("s.g.failures", "3-0")) in redis.calls
    assert handled == []


async def test_a_short_or_empty_claim_reply_is_nothing_to_do() -> None:
    for claimed in ([], [b"0-0"], [None, None]):
        redis = FakeRedis(claimed, read=None)
        assert await consumer(redis).poll_once() == 0


async def test_a_read_of_the_pending_list_with_trimmed_entries_keeps_their_ids() -> None:
    redis = FakeRedis([b"0-0", []], read=[[b"s", [(b"7-0", None)]]])
    c = consumer(redis)
    c._next_claim = float("inf")  # straight to XREADGROUP
    assert await c.poll_once() == 1
    assert [args for name, args in redis.calls if name == "xack"] == [("s", "g", b"7-0")]

"""The stream consumer reads every reply Redis can give without falling over: trimmed entries
come back without fields (or as nil), XPENDING and XCLAIM can be empty or odd, XINFO empty."""

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
    """`pending` is XPENDING's reply (the dead consumer "gone" owns what it lists), `claimed`
    XCLAIM's, `read` what XREADGROUP answers every time."""

    def __init__(self, claimed: Any, read: Any = None, pending: Any = None) -> None:
        self.claimed = claimed
        self.read = read
        self.pending = pending
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.replies: dict[str, Any] = {"xinfo_groups": None, "xlen": None, "exists": 0}

    async def xpending_range(self, *_args: Any, **_kwargs: Any) -> Any:
        return self.pending

    async def xclaim(self, *_args: Any, **_kwargs: Any) -> Any:
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


GONE = [{"message_id": b"1-0", "consumer": b"gone"}, {"message_id": b"2-0", "consumer": b"gone"}]


async def test_claimed_entries_trimmed_from_the_stream_are_acknowledged_and_dropped() -> None:
    redis = FakeRedis(
        [b"1-0", b"2-0"], read=[[b"s", [(b"1-0", {}), (b"2-0", None), (None, None)]]], pending=GONE
    )
    c = consumer(redis)
    c._own_cursor = None  # the start-up read of its own list is done: straight to claiming

    assert await c.poll_once() == 2  # the nil entry without an id is skipped

    acked = [args for name, args in redis.calls if name == "xack"]
    assert acked == [("s", "g", b"1-0", b"2-0")]
    assert handled == []


async def test_a_short_or_empty_pending_or_claim_reply_is_nothing_to_do() -> None:
    odd_pending: list[Any] = [None, [], [{}], [{"message_id": None, "consumer": b"gone"}]]
    for pending in odd_pending:
        redis = FakeRedis([b"1-0"], read=None, pending=pending)
        assert await consumer(redis).poll_once() == 0
    for claimed in (None, []):
        redis = FakeRedis(claimed, read=None, pending=GONE)
        assert await consumer(redis).poll_once() == 0


async def test_a_read_of_the_pending_list_with_trimmed_entries_keeps_their_ids() -> None:
    redis = FakeRedis([b"0-0", []], read=[[b"s", [(b"7-0", None)]]])
    c = consumer(redis)
    c._next_claim = float("inf")  # straight to XREADGROUP
    assert await c.poll_once() == 1
    assert [args for name, args in redis.calls if name == "xack"] == [("s", "g", b"7-0")]

"""The relay's acknowledged floor against every reply Redis can give, with a small fake."""

from __future__ import annotations

from typing import Any, cast

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from common.outbox import acknowledged_floor


class FakeRedis:
    def __init__(self, groups: Any, pending: Any = None) -> None:
        self._groups = groups
        self._pending = pending

    async def xinfo_groups(self, _stream: str) -> Any:
        if isinstance(self._groups, Exception):
            raise self._groups
        return self._groups

    async def xpending(self, _stream: str, _group: Any) -> Any:
        return self._pending


async def floor(groups: Any, pending: Any = None) -> tuple[int, int] | None:
    return await acknowledged_floor(cast(Redis, FakeRedis(groups, pending)), "s")


async def test_everything_acknowledged_between_the_two_reads_leaves_the_last_delivered() -> None:
    groups = [{"name": b"g", "pending": 3, "last-delivered-id": b"17-2"}]
    assert await floor(groups, {"pending": 0, "min": None, "max": None, "consumers": []}) == (
        17,
        2,
    )


async def test_the_oldest_pending_entry_holds_the_floor() -> None:
    groups = [
        {"name": b"a", "pending": 1, "last-delivered-id": b"20-0"},
        {"name": b"b", "pending": 0, "last-delivered-id": b"30-0"},
    ]
    assert await floor(groups, {"pending": 1, "min": b"12-5"}) == (12, 5)


@pytest.mark.parametrize("pending", [None, {}, {"min": b""}, {"min": b"garbage"}])
async def test_an_empty_or_unreadable_pending_summary_keeps_the_last_delivered(
    pending: Any,
) -> None:
    groups = [{"name": b"g", "pending": 2, "last-delivered-id": b"9-0"}]
    assert await floor(groups, pending) == (9, 0)


async def test_no_groups_or_no_stream_means_nothing_to_trim() -> None:
    assert await floor([]) is None
    assert await floor(None) is None
    assert await floor(ResponseError("no such key")) is None


async def test_a_group_with_an_unreadable_last_delivered_id_trims_nothing() -> None:
    groups = [
        {"name": b"g", "pending": None, "last-delivered-id": None},
        {"name": b"h", "pending": 0, "last-delivered-id": b"50-0"},
    ]
    assert await floor(groups) == (0, 0)

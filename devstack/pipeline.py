"""What a suite's event pipeline holds, read from PostgreSQL and Redis themselves, never from
the processes' gauges (a process whose relay died also stopped updating what it reports): the
outboxes' unpublished rows, the streams' consumer groups, the dead letters. `paysuite outbox`
and `paysuite events` print them; the soak and chaos runs judge a suite by them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from redis.asyncio import Redis

from common import db
from common.config import Settings
from common.events import dead_letter_stream

CONNECT_TIMEOUT_S = 5
# Redis 6 reports no lag: count the undelivered entries, up to this many.
LAG_COUNT_CAP = 10_000
# How many pending entries (oldest first) to look at for the longest idle time.
PENDING_SCAN = 1_000
DLQ_FIELDS = frozenset({b"source_stream", b"source_id", b"group", b"error"})


@dataclass(frozen=True, slots=True)
class OutboxStatus:
    database: str
    unpublished: int | None = None
    oldest_age_s: float | None = None
    error: str = ""


_OUTBOX_STATUS = (
    "SELECT count(*), extract(epoch FROM now() - min(created_at))::float8"
    " FROM outbox WHERE published_at IS NULL"
)


def service_databases() -> list[tuple[str, Any]]:
    from gateway_service.bootstrap import DATABASE as GATEWAY_DB
    from payment_service.bootstrap import DATABASE as PAYMENT_DB
    from wallet_service.bootstrap import DATABASE as WALLET_DB

    return [(database.name, database) for database in (PAYMENT_DB, WALLET_DB, GATEWAY_DB)]


async def outbox_status(settings: Settings) -> list[OutboxStatus]:
    return [await _one_outbox(settings, db_) for _name, db_ in service_databases()]


async def _one_outbox(settings: Settings, database: Any) -> OutboxStatus:
    url = database.url(settings)
    name = str(url.database)
    try:
        async with await psycopg.AsyncConnection.connect(
            db.libpq_dsn(url), connect_timeout=CONNECT_TIMEOUT_S
        ) as conn:
            row = await (await conn.execute(_OUTBOX_STATUS)).fetchone()
    except psycopg.Error as exc:
        return OutboxStatus(name, error=_first_line(exc))
    count, age = row if row else (0, None)
    return OutboxStatus(name, int(count), float(age) if age is not None else None)


async def stream_lengths(redis: Redis, streams: Sequence[str]) -> dict[str, int]:
    return {stream: int(await redis.xlen(stream)) for stream in streams}


@dataclass(frozen=True, slots=True)
class GroupStatus:
    group: str
    consumers: int
    lag: int
    lag_capped: bool  # lag is at least this (counted on a Redis without XINFO lag)
    pending: int
    oldest_idle_ms: int | None
    # How long the oldest entry not yet delivered to the group has been on the stream.
    oldest_waiting_ms: int | None = None

    def stalled(self, threshold_ms: int) -> bool:
        return any(
            waited is not None and waited > threshold_ms
            for waited in (self.oldest_idle_ms, self.oldest_waiting_ms)
        )


@dataclass(frozen=True, slots=True)
class RedisMemory:
    used: int
    limit: int  # 0: unlimited

    def describe(self) -> str:
        used = f"{self.used / 2**20:,.1f} MiB"
        if not self.limit:
            return f"Redis memory: {used} (no maxmemory: it can grow until the host runs out)"
        share = self.used / self.limit
        text = f"Redis memory: {used} of {self.limit / 2**20:,.0f} MiB ({share:.0%})"
        return f"[red]{text}: writes stop at 100 %[/red]" if share > 0.8 else text


@dataclass(frozen=True, slots=True)
class StreamStatus:
    stream: str
    length: int
    dead_letters: int
    groups: list[GroupStatus]


async def pending_status(redis: Redis, streams: Sequence[str]) -> list[StreamStatus]:
    seconds, micros = await redis.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000  # Redis' clock: entry ids use it
    return [await _stream_status(redis, stream, now_ms) for stream in streams]


async def redis_memory(redis: Redis) -> RedisMemory:
    info: dict[str, Any] = await redis.info("memory")
    return RedisMemory(int(info.get("used_memory") or 0), int(info.get("maxmemory") or 0))


async def _stream_status(redis: Redis, stream: str, now_ms: int) -> StreamStatus:
    dead_letters = int(await redis.xlen(dead_letter_stream(stream)) or 0)
    if not await redis.exists(stream):
        return StreamStatus(stream, 0, dead_letters, [])
    infos: list[dict[str, Any]] = await redis.xinfo_groups(stream) or []
    groups = [await _group_status(redis, stream, info, now_ms) for info in infos]
    return StreamStatus(stream, int(await redis.xlen(stream) or 0), dead_letters, groups)


async def _group_status(
    redis: Redis, stream: str, info: dict[str, Any], now_ms: int
) -> GroupStatus:
    group = _text(info["name"])
    lag, capped = await _lag(redis, stream, info)
    pending = int(info.get("pending") or 0)
    idle = None
    if pending:
        entries: list[dict[str, Any]] = await redis.xpending_range(
            stream, group, min="-", max="+", count=PENDING_SCAN
        )
        idle = max((int(e["time_since_delivered"]) for e in entries or ()), default=None)
    waiting = await _oldest_waiting_ms(redis, stream, info, now_ms) if lag else None
    return GroupStatus(group, int(info.get("consumers") or 0), lag, capped, pending, idle, waiting)


async def _oldest_waiting_ms(
    redis: Redis, stream: str, info: dict[str, Any], now_ms: int
) -> int | None:
    """Age of the first entry after the group's last delivered one, from its id's time."""
    after = _text(info.get("last-delivered-id") or b"0-0")
    first = await stream_range(redis, stream, low=f"({after}", count=1)
    if not first:
        return None
    added_ms = int(first[0].entry_id.partition("-")[0])
    return max(now_ms - added_ms, 0)


async def _lag(redis: Redis, stream: str, info: dict[str, Any]) -> tuple[int, bool]:
    """Redis 7 knows the lag (unless entries were deleted); otherwise count what is left."""
    if info.get("lag") is not None:
        return int(info["lag"]), False
    after = _text(info["last-delivered-id"])
    entries = await stream_range(redis, stream, low=f"({after}", count=LAG_COUNT_CAP)
    return len(entries), len(entries) >= LAG_COUNT_CAP


@dataclass(frozen=True, slots=True)
class DeadLetter:
    entry_id: str
    fields: dict[bytes, bytes]

    @property
    def original(self) -> dict[bytes, bytes]:
        """The entry as it was on its stream, without what dead-lettering added."""
        return {k: v for k, v in self.fields.items() if k not in DLQ_FIELDS}

    def field(self, name: str) -> str:
        return self.fields.get(name.encode(), b"").decode(errors="replace")


async def dead_letters(redis: Redis, stream: str, *, limit: int) -> list[DeadLetter]:
    return await stream_range(redis, dead_letter_stream(stream), count=limit)


async def stream_range(
    redis: Redis,
    stream: str,
    *,
    low: str = "-",
    high: str = "+",
    count: int,
    reverse: bool = False,
) -> list[DeadLetter]:
    """XRANGE (or XREVRANGE) as typed entries; redis-py's own annotation is a loose union."""
    if reverse:
        response: Any = await redis.xrevrange(stream, max=high, min=low, count=count)
    else:
        response = await redis.xrange(stream, min=low, max=high, count=count)
    return [DeadLetter(_text(entry_id), dict(fields)) for entry_id, fields in response or ()]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]

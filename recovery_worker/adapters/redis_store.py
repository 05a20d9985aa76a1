"""The worker's own bookkeeping in Redis: sweep leases and ladder rungs, and the read-only
view of the event pipeline.

Why Redis leases rather than `FOR UPDATE SKIP LOCKED`: the worker owns no database and holds
no database credentials (it acts only through the services), but it already needs Redis to
read the streams' health. A lease is `SET key token NX PX ttl`; its holder renews it while
the sweep runs (so a long sweep keeps it) and releases it with a compare-and-delete (so a
worker whose lease expired can never delete the next holder's). A worker that dies holding
a lease loses it after `ttl`. Two replicas therefore never run the same sweep at once; and
every action a sweep takes is idempotent anyway, so a lease lost to a long pause costs a
duplicate call, never a duplicate effect.

Redis errors become DependencyUnavailable here, once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from common.errors import DependencyUnavailable
from common.events import dead_letter_stream
from recovery_worker.domain.model import GroupHealth, StreamHealth

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Deletes / extends the key only while it still holds our token.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
# A lease left by an earlier incarnation of this replica (same owner, another process: it was
# killed holding it) is taken at once instead of after its ttl; a live one is never taken.
_TAKE_OVER = """
local holder = redis.call('get', KEYS[1])
if holder and string.sub(holder, 1, string.len(ARGV[1])) == ARGV[1]
    and string.sub(holder, 1, string.len(ARGV[2])) ~= ARGV[2] then
    return redis.call('set', KEYS[1], ARGV[3], 'PX', ARGV[4])
end
return false
"""
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
# The daily rung is the ladder's widest gap; a memory kept a little longer than that is
# enough. If it is lost, the payment is asked about once more than needed: harmless.
RUNG_MEMORY_TTL = timedelta(days=3)
# Redis 6 reports no lag: count the undelivered entries, up to this many.
LAG_COUNT_CAP = 10_000
# Stalled entries counted per group at most (the count is "at least" beyond it).
STALLED_SCAN = 1_000


async def _redis(call: Awaitable[T]) -> T:
    try:
        return await call
    except (RedisError, OSError) as exc:
        raise DependencyUnavailable(f"redis unavailable: {type(exc).__name__}") from exc


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisLeases:
    """Sweep leases in Redis. `owner` names the replica, kept across its restarts
    (PAYSUITE_REPLICA_NAME): a restarted worker takes over at once the leases its killed
    predecessor held, rather than waiting out their ttl (60 s by default, which made payments
    wait far past the 10 s recovery window of invariant 8 after a worker was killed)."""

    def __init__(self, redis: Redis, *, prefix: str, ttl: timedelta, owner: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._ttl_ms = int(ttl.total_seconds() * 1000)
        self._owner = owner
        # This process's leases, told apart from those of an earlier one of the same owner.
        self._incarnation = f"{owner}:{uuid.uuid4().hex}:"
        # Leases (key -> token) whose release failed: released before they are next asked for.
        self._unreleased: dict[str, str] = {}

    def key(self, name: str) -> str:
        return f"{self._prefix}paysuite.recovery.lease.{name}"

    @asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[bool]:
        key, token = self.key(name), f"{self._incarnation}{uuid.uuid4().hex}"
        await self._release_unreleased(key)
        acquired = await _redis(self._redis.set(key, token, nx=True, px=self._ttl_ms))
        if not acquired:
            acquired = await _redis(
                self._redis.eval(
                    _TAKE_OVER, 1, key, f"{self._owner}:", self._incarnation, token, self._ttl_ms
                )
            )
            if acquired:
                log.info("recovery.lease_taken_over", lease=key)
        if not acquired:
            yield False
            return
        renewing = asyncio.create_task(self._renew(key, token))
        try:
            yield True
        finally:
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
            await self._release(key, token)

    async def _renew(self, key: str, token: str) -> None:
        while True:
            await asyncio.sleep(self._ttl_ms / 3000)
            try:
                kept = await self._redis.eval(_RENEW, 1, key, token, self._ttl_ms)
            except (RedisError, OSError) as exc:
                log.warning("recovery.lease_renew_failed", lease=key, error=type(exc).__name__)
                continue
            if not kept:
                log.warning("recovery.lease_lost", lease=key)
                return

    async def _release(self, key: str, token: str) -> None:
        # A failed release is not an error: it is tried again before this process next asks
        # for the lease (`_release_unreleased`), and the lease expires after its ttl anyway.
        try:
            await self._redis.eval(_RELEASE, 1, key, token)
        except (RedisError, OSError):
            self._unreleased[key] = token

    async def _release_unreleased(self, key: str) -> None:
        """Releases this process's own lease on `key` that it failed to release (Redis
        restarting with its data when the sweep ended, seen in chaos): left, its live holder
        cannot take it over, so the sweep reported BUSY every round until the ttl ran out
        (60 s: pending payments whose webhooks were lost waited 45 s past the faults)."""
        token = self._unreleased.get(key)
        if token is not None:
            await _redis(self._redis.eval(_RELEASE, 1, key, token))
            del self._unreleased[key]


class RedisRungMemory:
    def __init__(self, redis: Redis, *, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    def _key(self, payment_id: str) -> str:
        return f"{self._prefix}paysuite.recovery.rung.{payment_id}"

    async def last_tried(self, payment_id: str, *, since: datetime) -> int | None:
        raw = await _redis(self._redis.get(self._key(payment_id)))
        if raw is None:
            return None
        stamp, _, rung = _text(raw).rpartition(" ")
        # Tried before the payment last changed: that ladder is over, start again.
        return int(rung) if stamp == since.isoformat() else None

    async def remember(self, payment_id: str, *, since: datetime, rung: int) -> None:
        value = f"{since.isoformat()} {rung}"
        await _redis(self._redis.set(self._key(payment_id), value, ex=RUNG_MEMORY_TTL))


class RedisMarks:
    """The reconciliation's high-water marks and last run, one key each. Losing them only
    makes the next run look back over its whole window (its cases are idempotent)."""

    def __init__(self, redis: Redis, *, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    def _key(self, name: str) -> str:
        return f"{self._prefix}paysuite.recovery.mark.{name}"

    async def get(self, name: str) -> datetime | None:
        raw = await _redis(self._redis.get(self._key(name)))
        return datetime.fromisoformat(_text(raw)) if raw is not None else None

    async def set(self, name: str, at: datetime) -> None:
        await _redis(self._redis.set(self._key(name), at.isoformat()))


class RedisPipeline:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def health(self, streams: Sequence[str], *, stalled_ms: int) -> list[StreamHealth]:
        return [await _redis(self._stream(stream, stalled_ms)) for stream in streams]

    async def _stream(self, stream: str, stalled_ms: int) -> StreamHealth:
        dead_letters = int(await self._redis.xlen(dead_letter_stream(stream)))
        if not await self._redis.exists(stream):
            return StreamHealth(stream, dead_letters)
        infos: list[dict[str, Any]] = await self._redis.xinfo_groups(stream)
        groups = [await self._group(stream, info, stalled_ms) for info in infos]
        return StreamHealth(stream, dead_letters, tuple(groups))

    async def _group(self, stream: str, info: dict[str, Any], stalled_ms: int) -> GroupHealth:
        group = _text(info["name"])
        pending = int(info.get("pending") or 0)
        stalled = 0
        if pending:
            entries = await self._redis.xpending_range(
                stream, group, min="-", max="+", count=STALLED_SCAN, idle=stalled_ms
            )
            stalled = len(entries or ())
        lag = await self._lag(stream, info)
        unread = lag > 0 and await self._waited_past(stream, info, stalled_ms)
        return GroupHealth(stream, group, lag, pending, stalled, undelivered_stalled=unread)

    async def _waited_past(self, stream: str, info: dict[str, Any], stalled_ms: int) -> bool:
        """Whether the first entry after the group's last delivered one is older than the
        threshold, by its id's time against Redis' own clock."""
        after = _text(info.get("last-delivered-id") or b"0-0")
        first = await self._redis.xrange(stream, min=f"({after}", count=1)
        if not first:
            return False
        seconds, micros = await self._redis.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        added_ms = int(_text(first[0][0]).partition("-")[0])
        return now_ms - added_ms > stalled_ms

    async def _lag(self, stream: str, info: dict[str, Any]) -> int:
        """Redis 7 reports the lag; Redis 6 does not, so count what is left (capped)."""
        if info.get("lag") is not None:
            return int(info["lag"])
        after = _text(info["last-delivered-id"])
        entries = await self._redis.xrange(stream, min=f"({after}", count=LAG_COUNT_CAP)
        return len(entries or ())

"""How much payment work waits in the streams: the backlog admission control sheds load on.

Two measures over the consumer groups that drive payments (the named groups only):
- waiting: lag (not yet delivered to the group) plus pending (delivered, not yet
  acknowledged);
- queued for: how long the oldest entry not yet delivered has waited (now, by Redis' clock,
  minus the time in its id). This is the queueing delay a new payment's next step will see,
  so a bound on it bounds create → completed whatever the suite's speed, where a count fits
  one speed only. Pending entries do not count in it: one retried through an outage (a
  provider that does not answer) must not refuse every new payment.

Sampled by a supervised background task every `SAMPLE_EVERY_S` in one Redis round trip (one
more per stream with lag), and read from memory: a create call never waits on Redis for it. A
sample older than `STALE_AFTER_S` (Redis down, the sampler restarting) counts as no backlog:
unknown is not overloaded, and an outage must never refuse good payments.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.exceptions
import structlog
from prometheus_client import Gauge
from redis.asyncio import Redis

from common.aio import wait_any
from common.errors import DependencyUnavailable
from common.supervision import beat

log = structlog.get_logger(__name__)

# Often enough that a burst overshoots the bounds by little (a sample is one round trip).
SAMPLE_EVERY_S = 0.25
STALE_AFTER_S = 5.0

QUEUED = Gauge(
    "admission_queued_seconds",
    "How long the oldest stream entry not yet delivered to a consumer group that drives"
    " payments has waited, as admission control last sampled it.",
)
BACKLOG = Gauge(
    "admission_backlog",
    "Stream entries waiting (lag + pending) on the consumer groups that drive payments, as"
    " admission control last sampled them (lag counted up to just past the bound on a Redis"
    " without XINFO lag).",
)


# How many entries follow an id in a stream (up to a cap), and the first one's id.
_COUNT_AFTER = """
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
if #entries == 0 then return {0} end
return {#entries, entries[1][1]}
"""


@dataclass(frozen=True, slots=True)
class Group:
    """A consumer group whose waiting entries are payment work not yet done."""

    stream: str
    group: str


class BacklogSampler:
    """The waiting entries of `groups`, sampled in one or two Redis round trips."""

    def __init__(
        self,
        redis: Redis,
        groups: Sequence[Group],
        *,
        count_cap: int,
        every_s: float = SAMPLE_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._groups = tuple(groups)
        self._cap = count_cap
        self._every_s = every_s
        self._clock = clock
        self._value = 0
        self._queued_ms = 0
        self._sampled_at = float("-inf")
        self._outage = False
        self._count_after = redis.register_script(_COUNT_AFTER)

    def current(self) -> int:
        """The last sample, or 0 once it is stale."""
        if self._clock() - self._sampled_at > STALE_AFTER_S:
            return 0
        return self._value

    def queued_ms(self) -> int:
        """How long the oldest undelivered entry had waited at the last sample; 0 once stale."""
        if self._clock() - self._sampled_at > STALE_AFTER_S:
            return 0
        return self._queued_ms

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            beat()
            try:
                await self.sample()
            except DependencyUnavailable as exc:
                self._note_outage(exc)
            await wait_any(stop, at_most_s=self._every_s)

    async def sample(self) -> int:
        streams = sorted({g.stream for g in self._groups})
        try:
            infos, newest, now_ms = await self._group_infos(streams)
            measured = [
                await self._waiting(g, infos.get(g.stream, {}), newest) for g in self._groups
            ]
        except (redis.exceptions.RedisError, OSError) as exc:
            raise DependencyUnavailable(f"backlog sample failed: {exc!r}") from exc
        total = sum(waiting for waiting, _ in measured)
        oldest = min((since for _, since in measured if since is not None), default=now_ms)
        self._value, self._queued_ms = total, max(now_ms - oldest, 0)
        self._sampled_at = self._clock()
        BACKLOG.set(total)
        QUEUED.set(self._queued_ms / 1000)
        if self._outage:
            self._outage = False
            log.info("admission.backlog_sampling_back", backlog=total)
        return total

    async def _group_infos(
        self, streams: Sequence[str]
    ) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, str], int]:
        pipe = self._redis.pipeline(transaction=False)
        pipe.time()
        for stream in streams:
            pipe.xinfo_groups(stream)
            pipe.xrevrange(stream, count=1)
        now, *replies = await pipe.execute(raise_on_error=False)
        if isinstance(now, BaseException):
            raise now
        infos: dict[str, dict[str, dict[str, Any]]] = {}
        newest: dict[str, str] = {}
        for i, stream in enumerate(streams):
            groups, last = replies[2 * i], replies[2 * i + 1]
            if isinstance(groups, list):  # an error (no such stream yet): nothing waits there
                infos[stream] = {_text(info["name"]): info for info in groups}
            if isinstance(last, list) and last:
                newest[stream] = _text(last[0][0])
        seconds, micros = now
        return infos, newest, int(seconds) * 1000 + int(micros) // 1000

    async def _waiting(
        self, group: Group, infos: dict[str, dict[str, Any]], newest: dict[str, str]
    ) -> tuple[int, int | None]:
        """The group's waiting entries, and the time (ms, Redis' clock) of the oldest one not
        yet delivered (None: nothing undelivered)."""
        info = infos.get(group.group)
        if info is None:
            return 0, None
        pending = int(info.get("pending") or 0)
        delivered = _text(info.get("last-delivered-id") or b"0-0")
        if newest.get(group.stream, delivered) == delivered:
            return pending, None
        if info.get("lag") is not None:
            lag = int(info["lag"])
            if lag == 0:
                return pending, None
            first = await self._redis.xrange(group.stream, min=f"({delivered}", count=1)
            return pending + lag, _entry_ms(first)
        # Redis < 7 reports no lag (the embedded server is 6.2): count what follows the
        # group's last delivered entry, only when there is something, and only to the cap.
        # Counted in Redis by a script that answers the count and the first entry's id: an
        # XRANGE sent every entry (envelope and all) here to be parsed only to be counted,
        # up to the cap of 201 four times a second under overload.
        reply = await self._count_after(keys=[group.stream], args=[f"({delivered}", self._cap])
        count, first_id = int(reply[0]), reply[1] if len(reply) > 1 else None
        return pending + count, _id_ms(first_id) if first_id is not None else None

    def _note_outage(self, exc: DependencyUnavailable) -> None:
        if not self._outage:
            self._outage = True
            log.warning("admission.backlog_unavailable", error=str(exc))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entry_ms(entries: Any) -> int | None:
    """The time in the first entry's id (`<ms>-<seq>`), or None without entries."""
    if not entries:
        return None
    return _id_ms(entries[0][0])


def _id_ms(entry_id: bytes | str) -> int:
    """The time in a stream id (`<ms>-<seq>`)."""
    return int(_text(entry_id).partition("-")[0])

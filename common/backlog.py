"""How much payment work waits in the streams: the backlog admission control sheds load on.

The waiting entries of the consumer groups that drive payments: lag (not yet delivered to the
group) plus pending (delivered, not yet acknowledged), of the named groups only. Sampled by a
supervised background task every `SAMPLE_EVERY_S` in one Redis round trip (two when there is
lag to count on a Redis without XINFO lag), and read from memory: a create call never waits on
Redis for it. A sample older than `STALE_AFTER_S` (Redis down, the sampler restarting) counts
as no backlog: unknown is not overloaded, and an outage must never refuse good payments.
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

SAMPLE_EVERY_S = 0.5
STALE_AFTER_S = 5.0

BACKLOG = Gauge(
    "admission_backlog",
    "Stream entries waiting (lag + pending) on the consumer groups that drive payments, as"
    " admission control last sampled them (lag counted up to just past the bound on a Redis"
    " without XINFO lag).",
)


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
        self._sampled_at = float("-inf")
        self._outage = False

    def current(self) -> int:
        """The last sample, or 0 once it is stale."""
        if self._clock() - self._sampled_at > STALE_AFTER_S:
            return 0
        return self._value

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
            infos, newest = await self._group_infos(streams)
            total = sum(
                [await self._waiting(g, infos.get(g.stream, {}), newest) for g in self._groups]
            )
        except (redis.exceptions.RedisError, OSError) as exc:
            raise DependencyUnavailable(f"backlog sample failed: {exc!r}") from exc
        self._value, self._sampled_at = total, self._clock()
        BACKLOG.set(total)
        if self._outage:
            self._outage = False
            log.info("admission.backlog_sampling_back", backlog=total)
        return total

    async def _group_infos(
        self, streams: Sequence[str]
    ) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, str]]:
        pipe = self._redis.pipeline(transaction=False)
        for stream in streams:
            pipe.xinfo_groups(stream)
            pipe.xrevrange(stream, count=1)
        replies = await pipe.execute(raise_on_error=False)
        infos: dict[str, dict[str, dict[str, Any]]] = {}
        newest: dict[str, str] = {}
        for i, stream in enumerate(streams):
            groups, last = replies[2 * i], replies[2 * i + 1]
            if isinstance(groups, list):  # an error (no such stream yet): nothing waits there
                infos[stream] = {_text(info["name"]): info for info in groups}
            if isinstance(last, list) and last:
                newest[stream] = _text(last[0][0])
        return infos, newest

    async def _waiting(
        self, group: Group, infos: dict[str, dict[str, Any]], newest: dict[str, str]
    ) -> int:
        info = infos.get(group.group)
        if info is None:
            return 0
        pending = int(info.get("pending") or 0)
        if info.get("lag") is not None:
            return pending + int(info["lag"])
        # Redis < 7 reports no lag (the embedded server is 6.2): count what follows the
        # group's last delivered entry, only when there is something, and only to the cap.
        delivered = _text(info.get("last-delivered-id") or b"0-0")
        if newest.get(group.stream, delivered) == delivered:
            return pending
        after = await self._redis.xrange(group.stream, min=f"({delivered}", count=self._cap)
        return pending + len(after or ())

    def _note_outage(self, exc: DependencyUnavailable) -> None:
        if not self._outage:
            self._outage = True
            log.warning("admission.backlog_unavailable", error=str(exc))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

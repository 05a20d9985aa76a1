"""Admission control for create calls: shed load before the suite queues more than it finishes.

A payment platform answers overload by refusing early and cheaply (Stripe's 429 per key)
rather than by queueing: in a closed loop without it, creates outran completions and
create → completed reached 19 s at p99. Two reasons to refuse, both RESOURCE_EXHAUSTED with a
RetryInfo delay (`Overloaded`, common/grpc/errors.py), nothing done, so the caller repeats
the request with the same idempotency key after the delay:
- backlog: the stream entries waiting on the consumer groups that drive payments (lag: not
  yet delivered to the group; pending: delivered, not yet acknowledged) are over the bound;
- rate: the caller is over its role's token bucket (common/ratelimit.py).

The backlog is sampled by a supervised background task every `SAMPLE_EVERY_S` and read from
memory on each call: a create call never waits on Redis for it. A sample older than
`STALE_AFTER_S` (Redis down, the sampler restarting) counts as no backlog: unknown is not
overloaded, and an outage must never refuse good payments.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis.exceptions
import structlog
from prometheus_client import Counter, Gauge
from redis.asyncio import Redis

from common.aio import wait_any
from common.auth import Principal
from common.bootstrap import LOOP_HEARTBEAT_S
from common.config import Settings
from common.errors import DependencyUnavailable, Overloaded, RateLimited
from common.ratelimit import Rate, RedisRateLimiter
from common.supervision import Task, beat

log = structlog.get_logger(__name__)

SAMPLE_EVERY_S = 0.5
STALE_AFTER_S = 5.0
# Backlog refusals spread their callers' retries over [1, 1 + JITTER) times the delay, so a
# crowd refused together does not come back together.
JITTER = 0.5

BACKLOG = Gauge(
    "admission_backlog",
    "Stream entries waiting (lag + pending) on the consumer groups that drive payments, as"
    " admission control last sampled them (lag counted up to just past the bound on a Redis"
    " without XINFO lag).",
)
REJECTED = Counter(
    "admission_rejected_total",
    "Create calls refused with RESOURCE_EXHAUSTED before doing anything, by reason"
    " (backlog, rate).",
    ["reason"],
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


class Backlog(Protocol):
    def current(self) -> int: ...


class Limiter(Protocol):
    async def wait_s(self, principal: Principal) -> float: ...


class _Throttled:
    """At most one log line per reason a second, with how many were refused in between."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._last: dict[str, float] = {}
        self._since: dict[str, int] = {}

    def rejected(self, reason: str, **fields: Any) -> None:
        self._since[reason] = self._since.get(reason, 0) + 1
        now = self._clock()
        if now - self._last.get(reason, float("-inf")) < 1.0:
            return
        self._last[reason] = now
        log.warning("admission.rejected", reason=reason, rejected=self._since.pop(reason), **fields)


class Admission:
    """Decides whether a create call may proceed; raises `Overloaded` (or `RateLimited`)."""

    def __init__(
        self,
        *,
        backlog: Backlog | None,
        max_backlog: int,
        retry_after_s: float,
        limiter: Limiter | None,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._backlog = backlog if max_backlog > 0 else None
        self._max_backlog = max_backlog
        self._retry_after_s = retry_after_s
        self._limiter = limiter
        self._jitter = jitter
        self._log = _Throttled(clock)

    async def admit(self, principal: Principal) -> None:
        # The backlog first: it costs nothing, and a call it refuses takes no token.
        if self._backlog is not None:
            waiting = self._backlog.current()
            if waiting > self._max_backlog:
                delay = self._retry_after_s * (1 + JITTER * self._jitter())
                self._refuse("backlog", principal, delay, backlog=waiting)
                raise Overloaded(
                    f"the suite is overloaded ({waiting} events waiting, bound"
                    f" {self._max_backlog}): retry after {delay:.1f} s with the same"
                    " idempotency key",
                    retry_after_s=delay,
                )
        if self._limiter is not None:
            wait = await self._limiter.wait_s(principal)
            if wait > 0:
                self._refuse("rate", principal, wait)
                raise RateLimited(
                    f"too many requests from this caller: retry after {wait:.2f} s with the"
                    " same idempotency key",
                    retry_after_s=wait,
                )

    def _refuse(self, reason: str, principal: Principal, delay: float, **fields: Any) -> None:
        REJECTED.labels(reason).inc()
        self._log.rejected(
            reason, caller=principal.subject, retry_after_s=round(delay, 3), **fields
        )


def from_settings(
    settings: Settings, redis: Redis, groups: Sequence[Group]
) -> tuple[Admission, list[Task]]:
    """The process's admission control and its background sampler (none when the backlog
    bound is off)."""
    rates = {role: Rate(*spec) for role, spec in settings.rate_limit_table().items()}
    limiter = RedisRateLimiter(redis, rates, key_prefix=settings.stream_prefix) if rates else None
    sampler = None
    if settings.admission_max_backlog > 0:
        # Counted just past the bound: beyond it, how far beyond changes no decision.
        sampler = BacklogSampler(redis, groups, count_cap=settings.admission_max_backlog + 1)
    admission = Admission(
        backlog=sampler,
        max_backlog=settings.admission_max_backlog,
        retry_after_s=settings.admission_retry_after_ms / 1000,
        limiter=limiter,
    )
    if sampler is None:
        return admission, []
    return admission, [Task("admission backlog sampler", sampler.run, heartbeat_s=LOOP_HEARTBEAT_S)]

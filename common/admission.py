"""Admission control for create calls: shed load before the suite queues more than it finishes.

A payment platform answers overload by refusing early and cheaply (Stripe's 429 per key)
rather than by queueing: in a closed loop without it, creates outran completions and
create → completed reached 19 s at p99. Two reasons to refuse, both RESOURCE_EXHAUSTED with a
RetryInfo delay (`Overloaded`, common/grpc/errors.py), nothing done, so the caller repeats
the request with the same idempotency key after the delay:
- backlog: the oldest stream entry not yet delivered to a consumer group that drives
  payments has waited longer than the bound (the queueing delay a new payment would meet:
  bounding it bounds create → completed at any speed), or more entries than the count
  bound wait there (lag: not yet delivered; pending: delivered, not yet acknowledged);
- rate: the caller is over its role's token bucket (common/ratelimit.py).

The backlog is sampled in the background and read from memory (common/backlog.py): a create
call never waits on Redis for it, and a stale sample counts as none.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import structlog
from prometheus_client import Counter
from redis.asyncio import Redis

from common.auth import Principal
from common.backlog import BacklogSampler, Group
from common.bootstrap import LOOP_HEARTBEAT_S
from common.config import Settings
from common.errors import Overloaded, RateLimited
from common.ratelimit import Rate, RedisRateLimiter
from common.supervision import Task

log = structlog.get_logger(__name__)

# Backlog refusals spread their callers' retries over [1, 1 + JITTER) times the delay, so a
# crowd refused together does not come back together.
JITTER = 0.5

REJECTED = Counter(
    "admission_rejected_total",
    "Create calls refused with RESOURCE_EXHAUSTED before doing anything, by reason"
    " (backlog, rate).",
    ["reason"],
)
for _reason in ("backlog", "rate"):  # present at 0 from the start, for rates and alerts
    REJECTED.labels(_reason)


class Backlog(Protocol):
    def current(self) -> int: ...
    def queued_ms(self) -> int: ...


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
        max_queued_ms: int = 0,
        limiter: Limiter | None,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._backlog = backlog if max_backlog > 0 or max_queued_ms > 0 else None
        self._max_backlog = max_backlog
        self._max_queued_ms = max_queued_ms
        self._retry_after_s = retry_after_s
        self._limiter = limiter
        self._jitter = jitter
        self._log = _Throttled(clock)

    async def admit(self, principal: Principal) -> None:
        # The backlog first: it costs nothing, and a call it refuses takes no token.
        if self._backlog is not None:
            self._check_backlog(self._backlog, principal)
        if self._limiter is not None:
            wait = await self._limiter.wait_s(principal)
            if wait > 0:
                self._refuse("rate", principal, wait)
                raise RateLimited(
                    f"too many requests from this caller: retry after {wait:.2f} s with the"
                    " same idempotency key",
                    retry_after_s=wait,
                )

    def _check_backlog(self, backlog: Backlog, principal: Principal) -> None:
        waiting, queued_ms = backlog.current(), backlog.queued_ms()
        if 0 < self._max_queued_ms < queued_ms:
            why = f"work queued for {queued_ms} ms, bound {self._max_queued_ms} ms"
        elif 0 < self._max_backlog < waiting:
            why = f"{waiting} events waiting, bound {self._max_backlog}"
        else:
            return
        delay = self._retry_after_s * (1 + JITTER * self._jitter())
        self._refuse("backlog", principal, delay, backlog=waiting, queued_ms=queued_ms)
        raise Overloaded(
            f"the suite is overloaded ({why}): retry after {delay:.1f} s with the same"
            " idempotency key",
            retry_after_s=delay,
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
    if settings.admission_max_backlog > 0 or settings.admission_max_queued_ms > 0:
        # Counted just past the bound: beyond it, how far beyond changes no decision (without
        # a count bound, one entry is all the queueing delay needs).
        cap = settings.admission_max_backlog + 1 if settings.admission_max_backlog else 1
        sampler = BacklogSampler(redis, groups, count_cap=cap)
    admission = Admission(
        backlog=sampler,
        max_backlog=settings.admission_max_backlog,
        max_queued_ms=settings.admission_max_queued_ms,
        retry_after_s=settings.admission_retry_after_ms / 1000,
        limiter=limiter,
    )
    if sampler is None:
        return admission, []
    return admission, [Task("admission backlog sampler", sampler.run, heartbeat_s=LOOP_HEARTBEAT_S)]

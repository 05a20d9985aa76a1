"""Per-caller rate limits: a token bucket per principal in Redis, rate and burst by role.

A bucket holds up to `burst` tokens and gains `per_s` a second; each create call takes one,
and a call that finds less than one is refused with the time until the next token. The
bucket lives in one Redis hash per caller, updated by one Lua script (one EVALSHA per call),
so every replica of the payment service shares it and a read-modify-write race cannot
admit more than the rate. Time is Redis' own (TIME), so replicas' clocks do not matter.

`take` below is the same arithmetic in Python: the unit tests check the math on it, and an
integration test runs both on one sequence of calls, so the script and the twin cannot drift.

Hand-written rather than the `limits` library. Not for want of a client: since 4.2 its async
Redis storage runs on redis-py (`implementation="redispy"`), coredis being only its default.
But the strategies its README documents are windows (fixed, moving, sliding counter) whose
`hit` answers a bare bool: the delay a RetryInfo needs takes a second round trip
(`get_window_stats`), and a burst above the sustained rate is not expressible. Twenty lines of
Lua are less to carry.

Redis unavailable: the limiter fails OPEN (admits), logs once per outage and counts each
admitted call in `rate_limiter_unavailable_total`: outages are waits, never refusals of good
payments.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass

import redis.exceptions
import structlog
from prometheus_client import Counter
from redis.asyncio import Redis

from common.auth import Principal
from common.errors import DependencyUnavailable

log = structlog.get_logger(__name__)

UNAVAILABLE = Counter(
    "rate_limiter_unavailable_total",
    "Create calls admitted without a rate-limit check because Redis did not answer (fail open).",
)

# A limiter that waits longer than this for Redis admits the call: a slow Redis must not
# become a slow payment service.
CHECK_TIMEOUT_S = 0.5

# KEYS[1]: the caller's bucket; ARGV: tokens per second, burst. Returns the microseconds until
# a token is free: 0 when one was taken (admitted).
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / rate * 1000000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return wait
"""


@dataclass(frozen=True, slots=True)
class Rate:
    per_s: float
    burst: float


@dataclass(frozen=True, slots=True)
class Bucket:
    tokens: float
    at: float  # seconds, the clock of the last update


def take(bucket: Bucket | None, rate: Rate, now: float) -> tuple[Bucket, float]:
    """The bucket after one call at `now`, and the seconds until a token is free (0: taken).
    A new caller starts with a full bucket."""
    tokens = rate.burst if bucket is None else bucket.tokens
    at = now if bucket is None else bucket.at
    tokens = min(rate.burst, tokens + max(0.0, now - at) * rate.per_s)
    if tokens >= 1:
        return Bucket(tokens - 1, now), 0.0
    return Bucket(tokens, now), math.ceil((1 - tokens) / rate.per_s * 1e6) / 1e6


def rate_for(principal: Principal, rates: Mapping[str, Rate]) -> Rate | None:
    """The principal's limit: the most generous of its roles', None (unlimited) as soon as one
    of its roles has no limit. Limits restrict a role; a second role never tightens the first."""
    found = [rates.get(role.value) for role in principal.roles]
    if not found or any(rate is None for rate in found):
        return None
    return max((r for r in found if r is not None), key=lambda r: (r.per_s, r.burst))


class RedisRateLimiter:
    def __init__(self, redis: Redis, rates: Mapping[str, Rate], *, key_prefix: str = "") -> None:
        self._rates = dict(rates)
        self._script = redis.register_script(_TAKE)
        self._prefix = f"{key_prefix}paysuite.ratelimit."
        self._outage = False

    @property
    def enabled(self) -> bool:
        return bool(self._rates)

    async def wait_s(self, principal: Principal) -> float:
        """Takes a token for the principal; the seconds until one is free when none is (0:
        admitted, also when it has no limit or Redis does not answer)."""
        rate = rate_for(principal, self._rates)
        if rate is None:
            return 0.0
        try:
            micros = await self._take(principal.subject, rate)
        except DependencyUnavailable as exc:
            self._unavailable(exc)
            return 0.0
        if self._outage:
            self._outage = False
            log.info("ratelimit.redis_back")
        return int(micros) / 1e6

    async def _take(self, subject: str, rate: Rate) -> int:
        # Any failure of the check admits: a refused connection, a timeout (an OSError), a
        # Redis at maxmemory, or a script error. The limiter guards the suite; it must never
        # be the reason a good payment is refused.
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                reply = await self._script(
                    keys=[self._prefix + subject], args=[rate.per_s, rate.burst]
                )
        except (redis.exceptions.RedisError, OSError) as exc:
            raise DependencyUnavailable(f"rate limit check failed: {exc!r}") from exc
        return int(reply)

    def _unavailable(self, exc: DependencyUnavailable) -> None:
        UNAVAILABLE.inc()
        if not self._outage:
            self._outage = True
            log.warning("ratelimit.redis_unavailable_failing_open", error=str(exc))

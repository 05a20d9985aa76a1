"""The admission decision with small fakes: backlog over its bound, a caller over its rate."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from common.admission import REJECTED, Admission
from common.auth import Principal, Role
from common.errors import Overloaded, RateLimited

CALLER = Principal("user-1", frozenset({Role.USER}))


class FakeBacklog:
    def __init__(self, value: int, queued_ms: int = 0) -> None:
        self.value = value
        self.queued = queued_ms

    def current(self) -> int:
        return self.value

    def queued_ms(self) -> int:
        return self.queued


class FakeLimiter:
    def __init__(self, wait_s: float = 0.0) -> None:
        self.wait = wait_s
        self.asked: list[str] = []

    async def wait_s(self, principal: Principal) -> float:
        self.asked.append(principal.subject)
        return self.wait


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def admission(
    backlog: int = 0,
    *,
    bound: int = 100,
    limiter: FakeLimiter | None = None,
    clock: Clock | None = None,
) -> Admission:
    return Admission(
        backlog=FakeBacklog(backlog),
        max_backlog=bound,
        retry_after_s=0.5,
        limiter=limiter,
        clock=clock or Clock(),
        jitter=lambda: 0.0,
    )


def rejected(reason: str) -> float:
    return REJECTED.labels(reason)._value.get()


async def test_under_and_at_the_bound_calls_are_admitted() -> None:
    await admission(99).admit(CALLER)
    await admission(100).admit(CALLER)


async def test_over_the_bound_a_call_is_refused_with_the_delay() -> None:
    before = rejected("backlog")
    with pytest.raises(Overloaded) as refused:
        await admission(101).admit(CALLER)
    assert type(refused.value) is Overloaded
    assert refused.value.retry_after_s == 0.5
    assert "101 events waiting" in refused.value.message
    assert rejected("backlog") == before + 1


async def test_a_bound_of_zero_is_off() -> None:
    await admission(10**6, bound=0).admit(CALLER)


async def test_backlog_refusals_are_spread_by_jitter() -> None:
    late = Admission(
        backlog=FakeBacklog(5), max_backlog=1, retry_after_s=1.0, limiter=None, jitter=lambda: 1.0
    )
    with pytest.raises(Overloaded) as refused:
        await late.admit(CALLER)
    assert refused.value.retry_after_s == pytest.approx(1.5)


async def test_a_caller_over_its_rate_is_refused_with_the_wait_for_a_token() -> None:
    before = rejected("rate")
    with pytest.raises(RateLimited) as refused:
        await admission(limiter=FakeLimiter(0.25)).admit(CALLER)
    assert refused.value.retry_after_s == 0.25
    assert refused.value.reason == "RATE_LIMITED"
    assert rejected("rate") == before + 1


async def test_a_call_the_backlog_refuses_takes_no_token() -> None:
    limiter = FakeLimiter()
    with pytest.raises(Overloaded):
        await admission(500, limiter=limiter).admit(CALLER)
    assert limiter.asked == []
    await admission(0, limiter=limiter).admit(CALLER)
    assert limiter.asked == ["user-1"]


async def test_refusals_are_logged_at_most_once_a_second_per_reason() -> None:
    clock = Clock()
    shedding = admission(500, clock=clock)
    with capture_logs() as logs:
        for at in (0.0, 0.3, 0.6, 1.1):
            clock.now = at
            with pytest.raises(Overloaded):
                await shedding.admit(CALLER)
    lines = [line for line in logs if line["event"] == "admission.rejected"]
    assert [line["rejected"] for line in lines] == [1, 3]
    assert lines[0]["reason"] == "backlog"
    assert lines[0]["caller"] == "user-1"


async def test_work_queued_longer_than_the_bound_is_refused_whatever_its_count() -> None:
    gate = Admission(
        backlog=FakeBacklog(3, queued_ms=900),
        max_backlog=100,
        max_queued_ms=750,
        retry_after_s=0.5,
        limiter=None,
        clock=Clock(),
        jitter=lambda: 0.0,
    )
    before = rejected("backlog")
    with pytest.raises(Overloaded, match="queued for 900 ms"):
        await gate.admit(CALLER)
    assert rejected("backlog") == before + 1


async def test_a_short_queue_under_both_bounds_is_admitted() -> None:
    gate = Admission(
        backlog=FakeBacklog(3, queued_ms=200),
        max_backlog=0,  # the count bound off: the queueing delay alone decides
        max_queued_ms=750,
        retry_after_s=0.5,
        limiter=None,
        jitter=lambda: 0.0,
    )
    await gate.admit(CALLER)

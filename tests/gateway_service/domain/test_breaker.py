"""The circuit breaker's state machine on a fake clock."""

from __future__ import annotations

import pytest

from gateway_service.domain.breaker import (
    BreakerOptions,
    BreakerState,
    CircuitBreaker,
    Transition,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


OPTIONS = BreakerOptions(
    failure_rate_threshold=0.5,
    slow_call_rate_threshold=0.5,
    slow_call_s=1.0,
    window_s=10.0,
    minimum_calls=4,
    reset_timeout_s=5.0,
    half_open_calls=2,
)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def transitions() -> list[Transition]:
    return []


@pytest.fixture
def breaker(clock: Clock, transitions: list[Transition]) -> CircuitBreaker:
    return CircuitBreaker(
        "sim-primary", OPTIONS, on_transition=transitions.append, clock=clock, wall_clock=clock
    )


def call(breaker: CircuitBreaker, clock: Clock, *, failed: bool, took_s: float = 0.0) -> bool:
    permit = breaker.acquire()
    if permit is None:
        return False
    clock.now += took_s
    breaker.record(permit, failed=failed)
    return True


def test_it_does_not_trip_below_the_minimum_volume(breaker: CircuitBreaker, clock: Clock) -> None:
    for _ in range(3):
        call(breaker, clock, failed=True)

    assert breaker.state is BreakerState.CLOSED


def test_an_error_rate_at_the_threshold_opens_it(
    breaker: CircuitBreaker, clock: Clock, transitions: list[Transition]
) -> None:
    for failed in (False, True, False, True):
        call(breaker, clock, failed=failed)

    assert breaker.state is BreakerState.OPEN
    assert [(t.from_state, t.to_state) for t in transitions] == [
        (BreakerState.CLOSED, BreakerState.OPEN)
    ]
    assert (transitions[0].snapshot.calls, transitions[0].snapshot.failures) == (4, 2)


def test_an_error_rate_below_the_threshold_keeps_it_closed(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    for failed in (False, False, True, False, False):
        call(breaker, clock, failed=failed)

    assert breaker.state is BreakerState.CLOSED


def test_failures_older_than_the_window_are_forgotten(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    for _ in range(3):
        call(breaker, clock, failed=True)
    clock.now += 11

    call(breaker, clock, failed=True)

    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot().calls == 1


def test_slow_calls_open_it_even_when_they_succeed(breaker: CircuitBreaker, clock: Clock) -> None:
    for _ in range(4):
        call(breaker, clock, failed=False, took_s=1.5)

    assert breaker.state is BreakerState.OPEN
    assert breaker.snapshot().slow_calls == 4


def test_an_open_breaker_refuses_calls_and_counts_them(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    for _ in range(4):
        call(breaker, clock, failed=True)

    assert not call(breaker, clock, failed=False)
    assert breaker.snapshot().rejected_calls == 1


def test_after_the_reset_timeout_limited_trials_close_it(
    breaker: CircuitBreaker, clock: Clock, transitions: list[Transition]
) -> None:
    for _ in range(4):
        call(breaker, clock, failed=True)
    clock.now += 5

    first, second = breaker.acquire(), breaker.acquire()
    assert breaker.state is BreakerState.HALF_OPEN
    assert first is not None
    assert second is not None
    assert breaker.acquire() is None  # only two trials at a time
    breaker.record(first, failed=False)
    breaker.record(second, failed=False)

    assert breaker.state is BreakerState.CLOSED
    assert [t.to_state for t in transitions] == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]
    assert breaker.snapshot().calls == 0


def test_a_failed_trial_opens_it_again(breaker: CircuitBreaker, clock: Clock) -> None:
    for _ in range(4):
        call(breaker, clock, failed=True)
    clock.now += 5

    call(breaker, clock, failed=True)

    assert breaker.state is BreakerState.OPEN
    clock.now += 4.9
    assert breaker.state is BreakerState.OPEN
    clock.now += 0.1
    assert breaker.state is BreakerState.HALF_OPEN


def _half_open(breaker: CircuitBreaker, clock: Clock) -> None:
    for _ in range(4):
        call(breaker, clock, failed=True)
    clock.now += 5
    assert breaker.state is BreakerState.HALF_OPEN


def test_a_released_trial_frees_its_slot_for_another(breaker: CircuitBreaker, clock: Clock) -> None:
    _half_open(breaker, clock)
    cancelled, second = breaker.acquire(), breaker.acquire()
    assert cancelled is not None
    assert second is not None
    assert breaker.acquire() is None

    breaker.release(cancelled)  # its caller went away: no outcome
    third = breaker.acquire()
    assert third is not None
    breaker.record(second, failed=False)
    breaker.record(third, failed=False)

    assert breaker.state is BreakerState.CLOSED


def test_a_trial_whose_outcome_is_lost_does_not_hold_the_breaker_half_open(
    breaker: CircuitBreaker, clock: Clock, transitions: list[Transition]
) -> None:
    """Seen under `make chaos`: one trial never reported (neither recorded nor released) and
    the breaker refused every call to its provider until the gateway restarted."""
    _half_open(breaker, clock)
    lost, passed = breaker.acquire(), breaker.acquire()
    assert lost is not None
    assert passed is not None
    breaker.record(passed, failed=False)
    assert breaker.acquire() is None

    clock.now += OPTIONS.reset_timeout_s + OPTIONS.slow_call_s
    retried = [breaker.acquire(), breaker.acquire()]
    assert breaker.state is BreakerState.HALF_OPEN
    for permit in retried:
        assert permit is not None
        breaker.record(permit, failed=False)
    # The lost trial's late outcome belongs to a period that is over: it changes nothing.
    breaker.record(lost, failed=True)

    assert breaker.state is BreakerState.CLOSED
    assert [t.to_state for t in transitions][-3:] == [
        BreakerState.HALF_OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]

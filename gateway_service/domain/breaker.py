"""A per-provider circuit breaker: closed, open, half-open.

Written here rather than taken from a library: purgatory (3.0) and aiobreaker (1.2), the
maintained async ones, both trip on a count of *consecutive* failures and let one trial call
through when half-open. Neither expresses what seed 002 and issue 7 ask for: an error *rate*
over a rolling time window with a minimum number of calls, a slow-call threshold, and a limited
number of half-open trial calls. The state machine below is small and has no I/O, so it is
tested with a fake clock.

    CLOSED ──(failure or slow-call rate ≥ threshold, with ≥ minimum_calls in the window)──> OPEN
    OPEN ──(reset_timeout elapsed)──> HALF_OPEN
    HALF_OPEN ──(half_open_calls trials all succeed)──> CLOSED
    HALF_OPEN ──(any trial fails)──> OPEN
    HALF_OPEN ──(a trial unanswered for reset_timeout + slow_call_s)──> HALF_OPEN, new trials

A trial holds one of the few half-open slots until its outcome is recorded, or it is released
(`release`: its call was cancelled, so it proved nothing). Before both existed, one trial whose
caller was cancelled (a client gone, a deadline) kept its slot for good: the breaker stayed
half-open, refusing every call to the provider, until the gateway restarted. Money stopped
moving to that provider while its status said only "half_open" (found by `make chaos`: refunds
and status syncs of one provider refused for minutes after its faults ended).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerOptions:
    failure_rate_threshold: float = 0.5
    # A call slower than slow_call_s counts as slow; this share of slow calls also trips.
    slow_call_rate_threshold: float = 1.0
    slow_call_s: float = 2.0
    window_s: float = 30.0
    minimum_calls: int = 10
    reset_timeout_s: float = 5.0
    half_open_calls: int = 3


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    name: str
    state: BreakerState
    calls: int
    failures: int
    slow_calls: int
    rejected_calls: int
    state_since: float  # time.time() of the last transition


@dataclass(frozen=True, slots=True)
class Transition:
    name: str
    from_state: BreakerState
    to_state: BreakerState
    snapshot: BreakerSnapshot


class Permit:
    """One admitted call; report its outcome with `CircuitBreaker.record`, or give it back
    with `CircuitBreaker.release` if the call ended without one."""

    __slots__ = ("round", "started", "trial")

    def __init__(self, started: float, *, trial: bool, round: int = 0) -> None:
        self.started = started
        self.trial = trial
        # The half-open period a trial belongs to: one from an earlier period proves nothing.
        self.round = round


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        options: BreakerOptions,
        *,
        on_transition: Callable[[Transition], None] = lambda _: None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._options = options
        self._on_transition = on_transition
        self._clock = clock
        self._wall_clock = wall_clock
        self._state = BreakerState.CLOSED
        self._state_since = wall_clock()
        self._opened_at = 0.0
        # (finished_at, failed, slow) per call, oldest first, and how many of them failed and
        # were slow: kept as calls enter and leave the window, since counting the window on
        # every call made each charge's cost grow with the traffic of the last window_s.
        self._window: deque[tuple[float, bool, bool]] = deque()
        self._failures = 0
        self._slow = 0
        self._rejected = 0
        self._trials_started = 0
        self._trials_passed = 0
        self._round = 0  # half-open periods so far
        self._half_open_at = 0.0

    @property
    def state(self) -> BreakerState:
        self._maybe_half_open()
        return self._state

    def acquire(self) -> Permit | None:
        """A permit to call the provider, or None when the breaker refuses the call."""
        state = self.state
        if state is BreakerState.CLOSED:
            return Permit(self._clock(), trial=False)
        if state is BreakerState.HALF_OPEN and self._trials_started < self._options.half_open_calls:
            self._trials_started += 1
            return Permit(self._clock(), trial=True, round=self._round)
        self._rejected += 1
        return None

    def release(self, permit: Permit) -> None:
        """The permitted call ended without an outcome (cancelled): a trial's slot is free
        again for another trial of the same half-open period."""
        if permit.trial and self._state is BreakerState.HALF_OPEN and permit.round == self._round:
            self._trials_started = max(0, self._trials_started - 1)

    def record(self, permit: Permit, *, failed: bool) -> None:
        now = self._clock()
        slow = now - permit.started >= self._options.slow_call_s
        if permit.trial:
            self._record_trial(permit, failed=failed or slow)
            return
        self._window.append((now, failed, slow))
        self._failures += failed
        self._slow += slow
        self._prune(now)
        if self._state is BreakerState.CLOSED and self._should_trip():
            self._move(BreakerState.OPEN)

    def snapshot(self) -> BreakerSnapshot:
        self._maybe_half_open()
        self._prune(self._clock())
        return self._counts()

    def _record_trial(self, permit: Permit, *, failed: bool) -> None:
        if self._state is not BreakerState.HALF_OPEN or permit.round != self._round:
            return  # a trial that outlived its half-open period; it proves nothing now
        if failed:
            self._move(BreakerState.OPEN)
            return
        self._trials_passed += 1
        if self._trials_passed >= self._options.half_open_calls:
            self._move(BreakerState.CLOSED)

    def _should_trip(self) -> bool:
        calls = len(self._window)
        if calls < self._options.minimum_calls:
            return False
        return (
            self._failures / calls >= self._options.failure_rate_threshold
            or self._slow / calls >= self._options.slow_call_rate_threshold
        )

    def _prune(self, now: float) -> None:
        horizon = now - self._options.window_s
        while self._window and self._window[0][0] < horizon:
            _, failed, slow = self._window.popleft()
            self._failures -= failed
            self._slow -= slow

    def _maybe_half_open(self) -> None:
        now = self._clock()
        if self._state is BreakerState.OPEN:
            if now - self._opened_at >= self._options.reset_timeout_s:
                self._move(BreakerState.HALF_OPEN)
        elif (
            self._state is BreakerState.HALF_OPEN
            and self._trials_started >= self._options.half_open_calls
            and now - self._half_open_at
            >= self._options.reset_timeout_s + self._options.slow_call_s
        ):
            # Every slot taken and still no verdict, long after a trial would have counted
            # as slow: a trial's outcome was lost. New trials, rather than refusing forever.
            self._move(BreakerState.HALF_OPEN)

    def _move(self, state: BreakerState) -> None:
        previous, self._state = self._state, state
        self._state_since = self._wall_clock()
        self._trials_started = self._trials_passed = 0
        if state is BreakerState.OPEN:
            self._opened_at = self._clock()
        if state is BreakerState.HALF_OPEN:
            self._round += 1
            self._half_open_at = self._clock()
        if state is BreakerState.CLOSED:
            # A fresh start: the failures that opened the breaker are history.
            self._window.clear()
            self._failures = self._slow = 0
        self._on_transition(Transition(self.name, previous, state, self._counts()))

    def _counts(self) -> BreakerSnapshot:
        return BreakerSnapshot(
            name=self.name,
            state=self._state,
            calls=len(self._window),
            failures=self._failures,
            slow_calls=self._slow,
            rejected_calls=self._rejected,
            state_since=self._state_since,
        )

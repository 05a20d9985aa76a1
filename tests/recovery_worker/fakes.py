"""In-memory fakes of the worker's ports, with the behaviour the real ones promise."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from common.errors import DependencyUnavailable, DomainError
from recovery_worker.domain.model import (
    PaymentStatus,
    PaymentView,
    RecoveryAttempt,
    RecoveryOutcome,
    RecoveryResult,
    StreamHealth,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def payment(
    payment_id: str,
    status: PaymentStatus = PaymentStatus.PENDING,
    *,
    age: timedelta,
    operation: str = "op",
    kind: str = "deposit",
) -> PaymentView:
    """A payment last changed `age` before T0 (and created an hour before that)."""
    changed = T0 - age
    created = changed - timedelta(hours=1)
    return PaymentView(payment_id, kind, status.value, created, changed, operation)


class FakePayments:
    """Lists payments, and answers RecoverPayment as the payment service does: one answer
    per attempt id, however often asked (`recovered` counts the attempts that acted)."""

    def __init__(self, *payments: PaymentView, outcome: RecoveryOutcome = RecoveryOutcome.UNKNOWN):
        self.payments = list(payments)
        self.down = False
        self.outcome = outcome
        self.error: DomainError | None = None
        self.attempts: dict[str, RecoveryAttempt] = {}
        self.recovered: list[str] = []

    async def stuck(
        self, status: PaymentStatus, *, created_before: datetime
    ) -> AsyncIterator[PaymentView]:
        if self.down:
            raise DependencyUnavailable("payment service unavailable: UNAVAILABLE")
        for p in self.payments:
            if p.status == status.value and p.created_at < created_before:
                yield p

    async def recover(self, attempt: RecoveryAttempt) -> RecoveryResult:
        if self.error is not None:
            raise self.error
        if attempt.attempt_id not in self.attempts:
            self.attempts[attempt.attempt_id] = attempt
            self.recovered.append(attempt.payment_id)
        return RecoveryResult(self.outcome)


class FakeWallet:
    def __init__(self, expired: int = 0) -> None:
        self.expired = [f"hold-{i}" for i in range(expired)]
        self.calls = 0

    async def expire_holds(self, *, limit: int) -> Sequence[str]:
        self.calls += 1
        batch, self.expired = self.expired[:limit], self.expired[limit:]
        return batch


class FakePipeline:
    def __init__(self, *streams: StreamHealth) -> None:
        self.streams = list(streams)
        self.asked_ms = 0

    async def health(self, streams: Sequence[str], *, stalled_ms: int) -> list[StreamHealth]:
        self.asked_ms = stalled_ms
        return [s for s in self.streams if s.stream in streams]


class FakeRungMemory:
    def __init__(self) -> None:
        self.rungs: dict[str, tuple[datetime, int]] = {}

    async def last_tried(self, payment_id: str, *, since: datetime) -> int | None:
        stamp, rung = self.rungs.get(payment_id, (None, None))
        return rung if stamp == since else None

    async def remember(self, payment_id: str, *, since: datetime, rung: int) -> None:
        self.rungs[payment_id] = (since, rung)


class FakeLeases:
    """Like the Redis leases: one holder per name at a time, freed at the end of the block."""

    def __init__(self) -> None:
        self.held: set[str] = set()
        self.down = False

    @asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[bool]:
        if self.down:
            raise DependencyUnavailable("redis unavailable: ConnectionError")
        if name in self.held:
            yield False
            return
        self.held.add(name)
        try:
            yield True
        finally:
            self.held.discard(name)

"""The sweeps. Each is one small class with `run_once(now) -> SweepReport`; `now` comes from
the caller's clock, so a test moves time instead of sleeping through thresholds.

A sweep that loses a dependency half-way returns what it did so far with status
UNAVAILABLE: every action it takes is idempotent (RecoverPayment on its attempt id,
ExpireHolds re-checks each hold), so the next round simply picks up again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from common.errors import DependencyUnavailable, DomainError
from recovery_worker.domain.ladder import Ladder
from recovery_worker.domain.model import (
    PaymentStatus,
    PaymentView,
    RecoveryAttempt,
    RecoveryOutcome,
    RecoveryResult,
    StreamHealth,
    SweepReport,
    SweepStatus,
)
from recovery_worker.service_layer.ports import Payments, Pipeline, RungMemory, Wallet

log = structlog.get_logger(__name__)

# Payments named in a ladder sweep's notes at most (the log has every one).
NOTE_SAMPLE = 5
# Payments in a row whose recovery met an outage before a ladder sweep gives up its round:
# one provider (or its breaker) down must not hold back the payments of the others, but
# several in a row are more likely the payment service or the gateway itself.
UNAVAILABLE_IN_A_ROW = 3


class Sweep(Protocol):
    name: str

    async def run_once(self, now: datetime) -> SweepReport: ...


@dataclass
class Tally:
    """A report under construction."""

    found: int = 0
    acted: int = 0
    skipped: int = 0
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def report(self, sweep: str, status: SweepStatus = SweepStatus.DONE) -> SweepReport:
        return SweepReport(sweep, status, self.found, self.acted, self.skipped, tuple(self.notes))


def _sample(tally: Tally, text: str) -> None:
    if len(tally.notes) < NOTE_SAMPLE:
        tally.note(text)


def unavailable(sweep: str, tally: Tally, exc: DependencyUnavailable) -> SweepReport:
    log.warning("recovery.sweep_interrupted", sweep=sweep, error=exc.message)
    tally.note(exc.message)
    return tally.report(sweep, SweepStatus.UNAVAILABLE)


class LadderSweep:
    """Payments stuck in one status: each is moved on at the rungs of its ladder, measured
    from its last change (`updated_at`), through the payment service's RecoverPayment.

    The payment decides what moving on means (ask the provider again, or run its saga's
    next step again with the same keys), applies only what the provider confirms, and notes
    the attempt in its audit trail. This sweep never changes a payment itself, so an unknown
    answer can never fail one. Each attempt is named `<sweep>:<updated_at>:<rung>`: asking
    twice (a retry after a lost answer, or the rung memory lost) is the same attempt, noted
    once, and does not act again.
    """

    name = ""
    status = PaymentStatus.PENDING

    def __init__(self, *, payments: Payments, memory: RungMemory, ladder: Ladder) -> None:
        self._payments = payments
        self._memory = memory
        self._ladder = ladder

    async def run_once(self, now: datetime) -> SweepReport:
        tally = Tally()
        # updated_at >= created_at, so every payment unchanged for the first rung was also
        # created before it: the service filters on creation, this sweep on the last change.
        created_before = now - self._ladder.rungs[0]
        # Not remembered as tried: a payment whose service or provider was unreachable is
        # asked again next round rather than pushed up the ladder by an answer nobody gave.
        interrupted: DependencyUnavailable | None = None
        in_a_row = 0
        try:
            async for payment in self._payments.stuck(self.status, created_before=created_before):
                try:
                    await self._one(payment, now, tally)
                except DependencyUnavailable as exc:
                    interrupted, in_a_row = exc, in_a_row + 1
                    if in_a_row >= UNAVAILABLE_IN_A_ROW:
                        break
                else:
                    in_a_row = 0
        except DependencyUnavailable as exc:
            return unavailable(self.name, tally, exc)
        if interrupted is not None:
            return unavailable(self.name, tally, interrupted)
        return tally.report(self.name)

    async def _one(self, payment: PaymentView, now: datetime, tally: Tally) -> None:
        age = now - payment.updated_at
        if self._ladder.rung_at(age) is None:
            return  # it changed recently: not stuck
        tally.found += 1
        last = await self._memory.last_tried(payment.payment_id, since=payment.updated_at)
        rung = self._ladder.due(age, last)
        if rung is None:
            tally.skipped += 1
            return
        attempt = RecoveryAttempt(
            payment_id=payment.payment_id,
            attempt_id=f"{self.name}:{payment.updated_at.isoformat()}:{rung}",
            rung=rung,
            next_attempt_at=payment.updated_at + self._ladder.reached_at(rung + 1),
        )
        await self._recover(payment, attempt, tally)

    async def _recover(self, payment: PaymentView, attempt: RecoveryAttempt, tally: Tally) -> None:
        try:
            result = await self._payments.recover(attempt)
        except DependencyUnavailable:
            raise  # not remembered: asked again next round (run_once)
        except DomainError as exc:
            # The payment service refused (a payment it does not know): a person has to look.
            # It climbs the ladder too, so the refusal is reported once per rung, not per round.
            log.warning("recovery.refused", payment_id=payment.payment_id, error=exc.message)
            await self._remember(attempt, payment)
            tally.skipped += 1
            _sample(tally, f"{payment.payment_id}: {exc.message}")
            return
        await self._remember(attempt, payment)
        self._count(payment, attempt, result, tally)

    async def _remember(self, attempt: RecoveryAttempt, payment: PaymentView) -> None:
        await self._memory.remember(payment.payment_id, since=payment.updated_at, rung=attempt.rung)

    def _count(
        self, payment: PaymentView, attempt: RecoveryAttempt, result: RecoveryResult, tally: Tally
    ) -> None:
        outcome = result.outcome
        if outcome is RecoveryOutcome.NOT_STUCK:
            tally.skipped += 1
            return
        tally.acted += 1
        if outcome is RecoveryOutcome.ESCALATED:
            _sample(tally, f"{payment.payment_id} ({payment.kind}): escalated to manual review")
        elif result.error:
            _sample(tally, f"{payment.payment_id} ({payment.kind}): {result.error}")
        emit = log.warning if outcome is RecoveryOutcome.ESCALATED else log.info
        emit(
            f"recovery.{self.name}_recovered",
            payment_id=payment.payment_id,
            rung=attempt.rung,
            outcome=outcome.value,
            next_attempt_at=attempt.next_attempt_at.isoformat(),
        )


class PendingSweep(LadderSweep):
    """Pending payments the provider has not answered (its webhook lost, say): the provider
    is asked again (SyncOperation, through the payment) at each rung; only its final answer
    moves the payment, so one it confirms it never processed fails, one it took completes."""

    name = "pending"
    status = PaymentStatus.PENDING


class InitiatedSweep(LadderSweep):
    """Payments still `initiated` past the threshold: a provider call whose outcome is
    unknown (timed out) is asked about; a saga whose next step never ran (its event stuck or
    lost, a process died) runs it again from its recovery point, with the same keys. The
    payment service's own resume sweep does the latter within seconds; this is the
    escalating backstop that also asks the provider, and leaves each attempt in the trail."""

    name = "initiated"
    status = PaymentStatus.INITIATED


class RefundingSweep(LadderSweep):
    """Deposits `refunding` past the threshold (seed 004: 30 minutes): the refund attempt
    the provider has not settled is asked about (same provider key, never a new refund), or
    a refund not yet sent is sent again; with backoff, on the ladder. The payment sends one
    still unsettled after its third attempt to manual review (REFUND_STALLED); a refund the
    provider declines is retried, and sent to review, by the payment's own saga."""

    name = "refunding"
    status = PaymentStatus.REFUNDING


class ExpiredHoldsSweep:
    """Wallet holds past their expiry, released through WalletService.ExpireHolds. The
    wallet service also sweeps its own holds; this is the backstop for a wallet whose
    sweeper is not running, and safe beside it (each hold is re-checked under its lock)."""

    name = "expired_holds"
    # Accounts per call, and calls per round at most (a round never runs unbounded).
    BATCH = 100
    MAX_BATCHES = 100

    def __init__(self, *, wallet: Wallet) -> None:
        self._wallet = wallet

    async def run_once(self, now: datetime) -> SweepReport:
        tally = Tally()
        try:
            for _ in range(self.MAX_BATCHES):
                released = await self._wallet.expire_holds(limit=self.BATCH)
                if not released:
                    break
                tally.found += len(released)
                tally.acted += len(released)
        except DependencyUnavailable as exc:
            return unavailable(self.name, tally, exc)
        if tally.acted:
            log.info("recovery.holds_released", count=tally.acted)
        return tally.report(self.name)


class PipelineSweep:
    """Consumer groups with entries pending longer than the threshold, their lag, and
    dead-lettered events: a stalled consumer or a poison message, made visible.

    The outbox backlog (rows not yet published) is not checked here: it needs a connection
    to each service's database, which the worker deliberately does not have (it owns no
    data and holds no database credentials); `paysuite outbox status` shows it.
    """

    name = "pipeline"

    def __init__(self, *, pipeline: Pipeline, streams: Sequence[str], stalled_after: timedelta):
        self._pipeline = pipeline
        self._streams = streams
        self._stalled_ms = int(stalled_after.total_seconds() * 1000)

    async def run_once(self, now: datetime) -> SweepReport:
        tally = Tally()
        try:
            streams = await self._pipeline.health(self._streams, stalled_ms=self._stalled_ms)
        except DependencyUnavailable as exc:
            return unavailable(self.name, tally, exc)
        for stream in streams:
            self._judge(stream, tally)
        return tally.report(self.name)

    def _judge(self, stream: StreamHealth, tally: Tally) -> None:
        stalled = [g for g in stream.groups if g.is_stalled]
        for group in stalled:
            unread = ", unread past the threshold" if group.undelivered_stalled else ""
            tally.note(
                f"{group.stream} / {group.group}: {group.stalled} stalled of {group.pending}"
                f" pending, lag {group.lag}{unread}"
            )
        if stream.dead_letters:
            tally.note(f"{stream.stream}.dlq: {stream.dead_letters} dead letters")
        problems = len(stalled) + (1 if stream.dead_letters else 0)
        tally.found += problems
        tally.skipped += problems
        if problems:
            log.warning(
                "recovery.pipeline_stalled",
                stream=stream.stream,
                dead_letters=stream.dead_letters,
                groups=[
                    {
                        "group": g.group,
                        "lag": g.lag,
                        "pending": g.pending,
                        "stalled": g.stalled,
                        "unread_stalled": g.undelivered_stalled,
                    }
                    for g in stream.groups
                ],
                stalled_after_ms=self._stalled_ms,
            )

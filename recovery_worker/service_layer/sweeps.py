"""The sweeps. Each is one small class with `run_once(now) -> SweepReport`; `now` comes from
the caller's clock, so a test moves time instead of sleeping through thresholds.

A sweep that loses a dependency half-way returns what it did so far with status
UNAVAILABLE: every action it takes is idempotent (SyncOperation of a settled operation is a
no-op, ExpireHolds re-checks each hold), so the next round simply picks up again.
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
    StreamHealth,
    SweepReport,
    SweepStatus,
)
from recovery_worker.service_layer.ports import Gateway, Payments, Pipeline, RungMemory, Wallet

log = structlog.get_logger(__name__)

# Payment ids named in a report's notes; the count says how many there were in all.
NOTE_SAMPLE = 5


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


def unavailable(sweep: str, tally: Tally, exc: DependencyUnavailable) -> SweepReport:
    log.warning("recovery.sweep_interrupted", sweep=sweep, error=exc.message)
    tally.note(exc.message)
    return tally.report(sweep, SweepStatus.UNAVAILABLE)


class PendingSweep:
    """Pending payments the provider has not answered: ask it again, on the ladder.

    The gateway applies whatever the provider says through its own state machine and emits
    `charge.succeeded` / `charge.failed`, which the payment service already consumes; this
    sweep never changes a payment itself, so an unknown answer can never fail one.
    """

    name = "pending"

    def __init__(
        self, *, payments: Payments, gateway: Gateway, memory: RungMemory, ladder: Ladder
    ) -> None:
        self._payments = payments
        self._gateway = gateway
        self._memory = memory
        self._ladder = ladder

    async def run_once(self, now: datetime) -> SweepReport:
        tally = Tally()
        # updated_at >= created_at, so every payment unchanged for the first rung was also
        # created before it: the service filters on creation, this sweep on the last change.
        created_before = now - self._ladder.rungs[0]
        try:
            async for payment in self._payments.stuck(
                PaymentStatus.PENDING, created_before=created_before
            ):
                await self._one(payment, now, tally)
        except DependencyUnavailable as exc:
            # Not remembered as tried: an unreachable gateway or provider is asked again next
            # round rather than pushed up the ladder by an answer nobody gave.
            return unavailable(self.name, tally, exc)
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
        if not payment.gateway_operation_id:
            tally.skipped += 1
            tally.note(f"{payment.payment_id}: pending without a gateway operation")
            return
        await self._sync(payment, rung, tally)

    async def _sync(self, payment: PaymentView, rung: int, tally: Tally) -> None:
        try:
            answer = await self._gateway.sync_operation(payment.gateway_operation_id)
        except DependencyUnavailable:
            raise  # the whole round waits (run_once), not just this payment
        except DomainError as exc:
            # The gateway refused (an operation it does not know): a person has to look. It
            # climbs the ladder too, so the refusal is reported once per rung, not per round.
            log.warning("recovery.sync_refused", payment_id=payment.payment_id, error=exc.message)
            await self._memory.remember(payment.payment_id, since=payment.updated_at, rung=rung)
            tally.skipped += 1
            tally.note(f"{payment.payment_id}: {exc.message}")
            return
        await self._memory.remember(payment.payment_id, since=payment.updated_at, rung=rung)
        tally.acted += 1
        log.info(
            "recovery.pending_synced",
            payment_id=payment.payment_id,
            operation_id=payment.gateway_operation_id,
            rung=rung,
            answer=answer.value,
        )


class _ListingSweep:
    """Payments in a status for longer than a threshold, reported (not acted on)."""

    name = ""
    status = PaymentStatus.PENDING

    def __init__(self, *, payments: Payments, after: timedelta) -> None:
        self._payments = payments
        self._after = after

    async def run_once(self, now: datetime) -> SweepReport:
        tally = Tally()
        found: list[PaymentView] = []
        try:
            async for payment in self._payments.stuck(
                self.status, created_before=now - self._after
            ):
                if now - payment.updated_at >= self._after:
                    found.append(payment)
        except DependencyUnavailable as exc:
            return unavailable(self.name, tally, exc)
        tally.found = tally.skipped = len(found)
        for payment in found[:NOTE_SAMPLE]:
            tally.note(f"{payment.payment_id} ({payment.kind}) since {payment.updated_at:%F %T}")
        if found:
            log.warning(
                f"recovery.{self.name}_stuck",
                count=len(found),
                payment_ids=[p.payment_id for p in found[:NOTE_SAMPLE]],
            )
        return tally.report(self.name)


class InitiatedSweep(_ListingSweep):
    """Payments still `initiated` past the threshold: their saga's first step did not run
    (its event is stuck, dead-lettered, or the step keeps failing). Resuming a saga is the
    payment service's job, from its own recorded recovery point; this sweep makes them
    visible (log and count) so a stuck saga is never silent."""

    name = "initiated"
    status = PaymentStatus.INITIATED


class RefundingSweep(_ListingSweep):
    """Payments `refunding` past the threshold (seed 004: 30 minutes). Reported only: the
    refund retry with backoff, and the move to `requires_manual_review` after N attempts,
    need a payment-service RPC that retries its refund saga step, which the payment
    lifecycle work is adding. Until it exists the worker lists them (log and count) so an
    operator sees every stuck refund; it never calls the gateway's Refund itself, which would
    bypass the payment's state machine."""

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
            tally.note(
                f"{group.stream} / {group.group}: {group.stalled} stalled of {group.pending}"
                f" pending, lag {group.lag}"
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
                    {"group": g.group, "lag": g.lag, "pending": g.pending, "stalled": g.stalled}
                    for g in stream.groups
                ],
                stalled_after_ms=self._stalled_ms,
            )

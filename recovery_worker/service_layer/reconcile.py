"""The reconciliation sweep: recent payments against the wallet's ledger and the provider,
and recent ledger movements against the payments (recovery_worker.domain.reconcile decides).

Cheap enough for every few minutes: one wallet call per page of payments (GetTransactions
by their refs), one gateway call per settled provider payment (concurrent within the page),
and a high-water mark per side (`Marks`, in Redis) so a run starts where the last one
stopped, not at the start of the window. The payments' mark stays at the oldest payment still
in flight, so one that settles later is looked at again; both marks trail `now` by
SETTLE_MARGIN, since a row is visible only once its transaction commits, a little after the
instant it carries.

Each mismatch opens a review case through the payment service (OpenReviewCase, idempotent:
the same mismatch found again adds nothing). A ledger movement whose payment does not exist
has no payment to hang a case on: it is logged as an error and reported.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta

import structlog

from common.errors import DependencyUnavailable, DomainError
from recovery_worker.domain.model import SweepReport, SweepStatus
from recovery_worker.domain.reconcile import (
    IN_FLIGHT,
    MOVED,
    THROUGH_PROVIDER,
    LedgerTxn,
    Mismatch,
    PaymentFacts,
    ProviderOp,
    check_movement,
    check_payment,
)
from recovery_worker.service_layer.ports import (
    Journal,
    Marks,
    PaymentFactsReader,
    ProviderOperations,
    Reviews,
)
from recovery_worker.service_layer.sweeps import NOTE_SAMPLE, Tally, unavailable

log = structlog.get_logger(__name__)

LAST_RUN = "reconcile.last_run"
PAYMENTS_MARK = "reconcile.payments"
LEDGER_MARK = "reconcile.ledger"
SETTLE_MARGIN = timedelta(minutes=1)


def _identity(mismatch: Mismatch) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    return mismatch.payment_id, mismatch.reason, tuple(sorted(mismatch.evidence.items()))


class _Run:
    """One run's findings: the payments it has seen (or looked up) and the mismatches."""

    def __init__(self) -> None:
        self.payments: dict[str, PaymentFacts | None] = {}
        self.mismatches: dict[tuple[str, str, tuple[tuple[str, str], ...]], Mismatch] = {}
        self.checked_payments = 0
        self.checked_movements = 0

    def add(self, found: Sequence[Mismatch]) -> None:
        for mismatch in found:
            self.mismatches.setdefault(_identity(mismatch), mismatch)


class ReconcileSweep:
    name = "reconcile"

    def __init__(
        self,
        *,
        payments: PaymentFactsReader,
        journal: Journal,
        operations: ProviderOperations,
        reviews: Reviews,
        marks: Marks,
        every: timedelta,
        window: timedelta,
    ) -> None:
        self._payments = payments
        self._journal = journal
        self._operations = operations
        self._reviews = reviews
        self._marks = marks
        self._every = every
        self._window = window

    async def run_once(self, now: datetime) -> SweepReport:
        tally = Tally()
        try:
            last = await self._marks.get(LAST_RUN)
            if last is not None and now - last < self._every:
                return tally.report(self.name, SweepStatus.NOT_DUE)
            run = _Run()
            payments_mark = await self._check_payments(run, now)
            await self._check_ledger(run, now)
            await self._open_cases(run, tally)
            # Only once every case is open: an interrupted run is simply done again.
            await self._marks.set(PAYMENTS_MARK, payments_mark)
            await self._marks.set(LEDGER_MARK, now - SETTLE_MARGIN)
            await self._marks.set(LAST_RUN, now)
        except DependencyUnavailable as exc:
            return unavailable(self.name, tally, exc)
        tally.note(f"checked {run.checked_payments} payments, {run.checked_movements} movements")
        return tally.report(self.name)

    async def _start(self, mark: str, now: datetime) -> datetime:
        floor = now - self._window
        since = await self._marks.get(mark)
        return max(since, floor) if since is not None else floor

    async def _check_payments(self, run: _Run, now: datetime) -> datetime:
        """Checks every payment created since the mark; returns the next mark."""
        next_mark = now - SETTLE_MARGIN
        async for page in self._payments.created_since(await self._start(PAYMENTS_MARK, now)):
            await self._check_page(run, page)
            for payment in page:
                if payment.status in IN_FLIGHT:
                    next_mark = min(next_mark, payment.created_at)
        return next_mark

    async def _check_page(self, run: _Run, page: Sequence[PaymentFacts]) -> None:
        txns = await self._journal.by_refs([ref for p in page for ref in p.refs])
        by_ref = {txn.operation_ref: txn for txn in txns}
        operations = await self._operations_of(page)
        for payment in page:
            run.payments[payment.payment_id] = payment
            run.checked_payments += 1
            operation = operations.get(payment.gateway_operation_id)
            run.add(check_payment(payment, by_ref, operation))

    async def _operations_of(self, page: Sequence[PaymentFacts]) -> dict[str, ProviderOp]:
        ids = sorted(
            {
                p.gateway_operation_id
                for p in page
                if p.gateway_operation_id and p.status in MOVED and p.kind in THROUGH_PROVIDER
            }
        )
        found = await asyncio.gather(*(self._operations.get(i) for i in ids))
        return {op.operation_id: op for op in found if op is not None}

    async def _check_ledger(self, run: _Run, now: datetime) -> None:
        """Every movement keyed by a payment's step since the mark belongs to a payment that
        explains it; payments the first pass did not see are looked up one by one."""
        async for page in self._journal.created_since(await self._start(LEDGER_MARK, now)):
            for txn in page:
                await self._check_movement(run, txn)

    async def _check_movement(self, run: _Run, txn: LedgerTxn) -> None:
        keyed = txn.payment_ref()
        if keyed is None:
            return
        run.checked_movements += 1
        payment_id = keyed[0]
        if payment_id not in run.payments:
            run.payments[payment_id] = await self._payments.get(payment_id)
        mismatch = check_movement(txn, run.payments[payment_id])
        if mismatch is not None:
            run.add([mismatch])

    async def _open_cases(self, run: _Run, tally: Tally) -> None:
        tally.found = len(run.mismatches)
        for mismatch in run.mismatches.values():
            await self._open_case(mismatch, tally)

    async def _open_case(self, mismatch: Mismatch, tally: Tally) -> None:
        if not mismatch.payment_id:
            log.error("recovery.reconcile_orphan", reason=mismatch.reason, **mismatch.evidence)
            tally.skipped += 1
            self._note(tally, mismatch.reason)
            return
        try:
            case_id = await self._reviews.open_case(mismatch)
        except DependencyUnavailable:
            raise
        except DomainError as exc:
            log.warning(
                "recovery.reconcile_case_refused", payment_id=mismatch.payment_id, error=exc.message
            )
            tally.skipped += 1
            self._note(tally, f"{mismatch.payment_id}: {exc.message}")
            return
        tally.acted += 1
        log.warning(
            "recovery.reconcile_mismatch",
            payment_id=mismatch.payment_id,
            case_id=case_id,
            reason=mismatch.reason,
        )
        self._note(tally, f"{mismatch.payment_id}: {mismatch.reason} (case {case_id})")

    @staticmethod
    def _note(tally: Tally, text: str) -> None:
        if len(tally.notes) < NOTE_SAMPLE:
            tally.note(text)

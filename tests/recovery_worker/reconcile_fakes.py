"""Builders and in-memory fakes for the reconciliation sweep's ports."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta

from common.errors import DependencyUnavailable
from recovery_worker.domain.reconcile import (
    LedgerTxn,
    Mismatch,
    PaymentFacts,
    Posting,
    ProviderOp,
    Step,
)
from tests.recovery_worker.fakes import T0

ACCOUNT = "acc-1"
OTHER = "acc-2"
CLEARING = "clearing"


def facts(
    status: str = "completed",
    *,
    kind: str = "deposit",
    amount: int = 1000,
    operation: str = "op-1",
    created: datetime = T0 - timedelta(minutes=10),
) -> PaymentFacts:
    source = "" if kind == "deposit" else ACCOUNT
    destination = ACCOUNT if kind == "deposit" else (OTHER if kind == "transfer" else "")
    return PaymentFacts(
        str(uuid.uuid4()), kind, status, amount, "USD", source, destination, operation, created
    )


def movement(
    payment: PaymentFacts, step: Step, amount: int | None = None, *, extra: int = 0
) -> LedgerTxn:
    """The ledger transaction the wallet writes for the payment's step: `amount` (default the
    payment's) into (credit) or out of (capture, transfer) its account; `extra` adds an
    unbalanced posting, as a tampered journal would."""
    moved = payment.amount_minor if amount is None else amount
    sign = 1 if step in (Step.CREDIT, Step.REVIEW_CREDIT) else -1
    counter = OTHER if step is Step.TRANSFER else CLEARING
    postings = [
        Posting(payment.account_id, sign * moved, "USD"),
        Posting(counter, -sign * moved, "USD"),
    ]
    if extra:
        postings.append(Posting(payment.account_id, extra, "USD"))
    return LedgerTxn(str(uuid.uuid4()), payment.ref(step), tuple(postings), T0)


def succeeded(payment: PaymentFacts, amount: int | None = None) -> ProviderOp:
    moved = payment.amount_minor if amount is None else amount
    return ProviderOp(payment.gateway_operation_id, "succeeded", moved, "USD")


class FakeFacts:
    def __init__(self, *payments: PaymentFacts) -> None:
        self.payments = {p.payment_id: p for p in payments}
        self.since: list[datetime] = []
        self.lookups: list[str] = []

    async def created_since(self, created_after: datetime) -> AsyncIterator[Sequence[PaymentFacts]]:
        self.since.append(created_after)
        page = [p for p in self.payments.values() if p.created_at >= created_after]
        if page:
            yield page

    async def get(self, payment_id: str) -> PaymentFacts | None:
        self.lookups.append(payment_id)
        return self.payments.get(payment_id)


class FakeJournal:
    def __init__(self, *txns: LedgerTxn) -> None:
        self.txns = list(txns)
        self.calls = 0
        self.down = False

    async def by_refs(self, refs: Sequence[str]) -> Sequence[LedgerTxn]:
        self.calls += 1
        if self.down:
            raise DependencyUnavailable("wallet service unavailable: UNAVAILABLE")
        return [t for t in self.txns if t.operation_ref in refs]

    async def created_since(self, created_after: datetime) -> AsyncIterator[Sequence[LedgerTxn]]:
        page = [t for t in self.txns if t.created_at >= created_after]
        if page:
            yield page


class FakeOperations:
    def __init__(self, *operations: ProviderOp) -> None:
        self.operations = {op.operation_id: op for op in operations}
        self.asked: list[str] = []

    async def get(self, operation_id: str) -> ProviderOp | None:
        self.asked.append(operation_id)
        return self.operations.get(operation_id)


class FakeReviews:
    """As OpenReviewCase: one case per payment, the same mismatch recorded once."""

    def __init__(self) -> None:
        self.cases: dict[str, list[Mismatch]] = {}

    async def open_case(self, mismatch: Mismatch) -> str:
        evidence = self.cases.setdefault(mismatch.payment_id, [])
        if mismatch not in evidence:
            evidence.append(mismatch)
        return f"case-{mismatch.payment_id}"


class FakeMarks:
    def __init__(self) -> None:
        self.marks: dict[str, datetime] = {}

    async def get(self, name: str) -> datetime | None:
        return self.marks.get(name)

    async def set(self, name: str, at: datetime) -> None:
        self.marks[name] = at

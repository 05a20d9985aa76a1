"""Three-way reconciliation: what the payment service, the wallet's ledger and the provider
(through the gateway) say about the same money, and where they disagree. Plain Python: the
sweep fetches the three sides in batches and asks these functions for the mismatches.

The wallet keys every money movement of a payment by `<payment_id>:<step>` (the payment's
`step_ref`); the steps that move money are below. A completed payment must have them, of
exactly its amount, each balancing; a failed or cancelled one must have none; and every such
movement in the ledger must belong to a payment in a state that explains it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

# The one review reason code the reconciliation opens cases with.
REASON_CODE = "RECONCILIATION_MISMATCH"


class Step(StrEnum):
    """The money-moving steps of a payment, by the suffix of their wallet operation ref."""

    CREDIT = "credit"
    REVIEW_CREDIT = "review-credit"
    CAPTURE = "capture"
    TRANSFER = "transfer"


# Which steps may move a payment's money, by kind: any other is a mismatch.
STEPS_OF_KIND: Mapping[str, frozenset[Step]] = {
    "deposit": frozenset({Step.CREDIT, Step.REVIEW_CREDIT}),
    "withdrawal": frozenset({Step.CAPTURE}),
    "refund": frozenset({Step.CAPTURE}),
    "transfer": frozenset({Step.TRANSFER}),
}
# Statuses whose money has certainly moved (a deposit partly refunded was credited first).
MOVED = frozenset({"completed", "partially_refunded"})
# Statuses in which no money may have moved.
UNMOVED = frozenset({"failed", "cancelled"})
# Statuses the saga may still change: the sweep comes back to these payments next run.
IN_FLIGHT = frozenset({"initiated", "pending", "refunding"})
# Kinds whose money passes through the provider (a transfer stays inside the wallet).
THROUGH_PROVIDER = frozenset({"deposit", "withdrawal", "refund"})


@dataclass(frozen=True, slots=True)
class PaymentFacts:
    """The payment service's side."""

    payment_id: str
    kind: str
    status: str
    amount_minor: int
    currency: str
    source_account_id: str
    destination_account_id: str
    gateway_operation_id: str
    created_at: datetime

    def ref(self, step: Step) -> str:
        return f"{self.payment_id}:{step.value}"

    @property
    def refs(self) -> list[str]:
        return [self.ref(step) for step in Step]

    @property
    def account_id(self) -> str:
        """The customer account the payment's money arrives in or leaves."""
        return self.destination_account_id if self.kind == "deposit" else self.source_account_id

    @property
    def amount(self) -> str:
        return f"{self.amount_minor} {self.currency}"


@dataclass(frozen=True, slots=True)
class Posting:
    account_id: str
    amount_minor: int  # signed, as the ledger entry
    currency: str


@dataclass(frozen=True, slots=True)
class LedgerTxn:
    """The wallet's side: one ledger transaction as its journal holds it."""

    transaction_id: str
    operation_ref: str
    postings: tuple[Posting, ...]
    created_at: datetime

    @property
    def imbalance(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for p in self.postings:
            totals[p.currency] = totals.get(p.currency, 0) + p.amount_minor
        return {currency: total for currency, total in sorted(totals.items()) if total}

    def moved(self, account_id: str, currency: str) -> int:
        return sum(
            p.amount_minor
            for p in self.postings
            if p.account_id == account_id and p.currency == currency
        )

    def describe(self) -> str:
        postings = ", ".join(
            f"{p.account_id} {p.amount_minor:+d} {p.currency}" for p in self.postings
        )
        text = f"txn {self.transaction_id}: {postings or 'no postings'}"
        if self.imbalance:
            text += f" (unbalanced: {self.imbalance})"
        return text

    def payment_ref(self) -> tuple[str, Step] | None:
        """(payment id, step) when the ref is a payment's money-moving step, else None."""
        payment_id, _, suffix = self.operation_ref.partition(":")
        try:
            return str(uuid.UUID(payment_id)), Step(suffix)
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class ProviderOp:
    """The provider's side, as the gateway recorded it."""

    operation_id: str
    status: str
    amount_minor: int
    currency: str

    def describe(self) -> str:
        return f"{self.operation_id}: {self.status} {self.amount_minor} {self.currency}"


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One disagreement, with every side in the evidence. Its fields are deterministic (no
    clock), so reporting it again is recognised as the same mismatch (OpenReviewCase)."""

    payment_id: str  # "" for a ledger movement whose payment does not exist
    reason: str
    evidence: Mapping[str, str]


def _payment_side(payment: PaymentFacts) -> dict[str, str]:
    return {
        "payment.kind": payment.kind,
        "payment.status": payment.status,
        "payment.amount": payment.amount,
        "payment.account_id": payment.account_id,
        "payment.gateway_operation_id": payment.gateway_operation_id or "(none)",
    }


def _ledger_side(payment: PaymentFacts, txns: Mapping[str, LedgerTxn]) -> dict[str, str]:
    return {
        f"wallet.{step.value}": txns[payment.ref(step)].describe()
        if payment.ref(step) in txns
        else "(none)"
        for step in Step
    }


def _mismatch(
    payment: PaymentFacts, txns: Mapping[str, LedgerTxn], reason: str, **more: str
) -> Mismatch:
    evidence = _payment_side(payment) | _ledger_side(payment, txns)
    evidence |= {key.replace("_", "."): value for key, value in more.items()}
    return Mismatch(payment.payment_id, reason, evidence)


def check_payment(
    payment: PaymentFacts, txns: Mapping[str, LedgerTxn], operation: ProviderOp | None
) -> list[Mismatch]:
    """The payment against its ledger transactions (by ref) and its provider operation."""
    mine = {ref: txn for ref, txn in txns.items() if ref in payment.refs}
    if payment.status in UNMOVED:
        return [_moved_for_unmoved(payment, mine)] if mine else []
    if payment.status not in MOVED:
        return []  # in flight or in review: nothing certain to compare yet
    found = _check_ledger(payment, mine)
    if payment.kind in THROUGH_PROVIDER:
        found += _check_provider(payment, mine, operation)
    return found


def _moved_for_unmoved(payment: PaymentFacts, txns: Mapping[str, LedgerTxn]) -> Mismatch:
    refs = ", ".join(sorted(txns))
    return _mismatch(
        payment, txns, f"{payment.status} {payment.kind} moved money in the wallet ({refs})"
    )


def _check_ledger(payment: PaymentFacts, txns: Mapping[str, LedgerTxn]) -> list[Mismatch]:
    expected = STEPS_OF_KIND.get(payment.kind, frozenset())
    found: list[Mismatch] = []
    stray = sorted(ref for ref in txns if Step(ref.rpartition(":")[2]) not in expected)
    if stray:
        found.append(
            _mismatch(
                payment,
                txns,
                f"{payment.kind} has ledger movements of another kind ({', '.join(stray)})",
            )
        )
    unbalanced = sorted(ref for ref, txn in txns.items() if txn.imbalance)
    if unbalanced:
        found.append(
            _mismatch(
                payment, txns, f"ledger transactions do not balance ({', '.join(unbalanced)})"
            )
        )
    moved = _moved(payment, [txns[ref] for ref in txns if ref not in stray])
    if moved != payment.amount_minor:
        reason = (
            f"{payment.status} {payment.kind} of {payment.amount}"
            f" moved {moved} {payment.currency} in the wallet"
        )
        found.append(_mismatch(payment, txns, reason))
    return found


def _moved(payment: PaymentFacts, txns: Iterable[LedgerTxn]) -> int:
    """What the ledger moved for the payment, in its currency, signed as the payment's own
    direction (a deposit adds to its account, the other kinds take from it)."""
    total = sum(txn.moved(payment.account_id, payment.currency) for txn in txns)
    return total if payment.kind == "deposit" else -total


def _check_provider(
    payment: PaymentFacts, txns: Mapping[str, LedgerTxn], operation: ProviderOp | None
) -> list[Mismatch]:
    seen = operation.describe() if operation else "(none)"
    if operation is None:
        reason = f"{payment.status} {payment.kind} has no provider operation"
    elif operation.status != "succeeded":
        reason = (
            f"{payment.status} {payment.kind}, but the provider operation is {operation.status}"
        )
    elif (operation.amount_minor, operation.currency) != (payment.amount_minor, payment.currency):
        reason = (
            f"{payment.kind} of {payment.amount},"
            f" but the provider moved {operation.amount_minor} {operation.currency}"
        )
    else:
        return []
    return [_mismatch(payment, txns, reason, gateway_operation=seen)]


def check_movement(txn: LedgerTxn, payment: PaymentFacts | None) -> Mismatch | None:
    """The other direction: a ledger movement keyed by a payment's step must belong to a
    payment of the kind that takes that step, in a state that explains the movement."""
    keyed = txn.payment_ref()
    if keyed is None:
        return None
    step = keyed[1]
    if payment is None:
        reason = f"ledger movement {txn.operation_ref} belongs to no payment"
        return Mismatch("", reason, {"wallet.movement": txn.describe(), "payment": "(none)"})
    if step not in STEPS_OF_KIND.get(payment.kind, frozenset()):
        reason = f"ledger movement {txn.operation_ref} does not fit a {payment.kind}"
        return _mismatch(payment, {txn.operation_ref: txn}, reason)
    if payment.status in UNMOVED:
        # The same mismatch check_payment reports, so one case holds it whichever finds it.
        return _moved_for_unmoved(payment, {txn.operation_ref: txn})
    return None


def payment_ids_of(txns: Sequence[LedgerTxn]) -> set[str]:
    return {keyed[0] for txn in txns if (keyed := txn.payment_ref()) is not None}

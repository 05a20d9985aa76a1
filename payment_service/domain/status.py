"""A payment's kinds and states, and the state machine between them. Plain Python.

    initiated ──► pending ──► completed ──► partially_refunded ──► refunded
        │  │         │  └───► refunding ──► refunded       ▲
        │  │         │              └─────► requires_manual_review ──► completed | failed | refunded
        │  └─────────┴──► failed                   (completed ──► refunded, all at once)
        ├──► completed                 (a transfer: one atomic wallet operation)
        └──► cancelled                 (before the provider was asked)

The states, and who moves a payment into each:
- initiated: recorded, answered to the caller; nothing asked of the provider yet. A withdrawal
  or refund in this state may already hold its funds (`hold.placed` in its audit trail).
- pending: the provider has it (charge, payout or refund accepted); its outcome comes as a
  provider event, or by asking the provider (the recovery worker).
- completed: money moved as asked. For a deposit it may later be refunded.
- failed: nothing moved (declined, refused, or compensated: a withdrawal's hold is released
  before it fails).
- cancelled: stopped by the caller before the provider was asked; its hold is then released.
  Never a deposit: its charge is requested by its creation.
- refunding: a deposit whose money the provider took but the wallet could never take in; the
  saga refunds it (a compensation), retrying a few times.
- refunded / partially_refunded: a deposit's money went back (all of it / part of it) through
  refund payments, or its compensation refund succeeded.
- requires_manual_review: the saga cannot decide (a compensation kept failing or stayed
  unsettled through the recovery worker's attempts, or a capture was refused after a
  payout); a review case is opened, and an operator resolves it into completed, failed or
  refunded (`resolve_review`).

Final states (failed, cancelled, refunded) never change again. Settled states (completed,
partially_refunded) never change by what a provider says: a late or contradicting provider
event opens a review instead (`payment.review_requested`); only a refund of the payment
itself moves them on (invariant 6).
"""

from __future__ import annotations

from enum import StrEnum

from common.errors import FailedPrecondition


class PaymentKind(StrEnum):
    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"
    TRANSFER = "transfer"
    REFUND = "refund"


class PaymentStatus(StrEnum):
    INITIATED = "initiated"
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"
    REFUNDING = "refunding"
    REFUNDED = "refunded"
    PARTIALLY_REFUNDED = "partially_refunded"
    REQUIRES_MANUAL_REVIEW = "requires_manual_review"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """Final or settled: nothing the provider says moves it any more."""
        return self in TERMINAL


S = PaymentStatus
FINAL = frozenset({S.FAILED, S.REFUNDED, S.CANCELLED})
SETTLED = frozenset({S.COMPLETED, S.PARTIALLY_REFUNDED})
TERMINAL = FINAL | SETTLED
ALLOWED: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    S.INITIATED: frozenset(
        {S.PENDING, S.COMPLETED, S.FAILED, S.CANCELLED, S.REQUIRES_MANUAL_REVIEW}
    ),
    S.PENDING: frozenset({S.COMPLETED, S.FAILED, S.REFUNDING, S.REQUIRES_MANUAL_REVIEW}),
    S.REFUNDING: frozenset({S.REFUNDED, S.REQUIRES_MANUAL_REVIEW}),
    S.REQUIRES_MANUAL_REVIEW: frozenset({S.COMPLETED, S.FAILED, S.REFUNDED}),
    # Only a refund of the payment itself moves a settled payment (see the module docstring).
    S.COMPLETED: frozenset({S.PARTIALLY_REFUNDED, S.REFUNDED}),
    S.PARTIALLY_REFUNDED: frozenset({S.REFUNDED}),
    S.FAILED: frozenset(),
    S.REFUNDED: frozenset(),
    S.CANCELLED: frozenset(),
}


class InvalidTransition(FailedPrecondition):
    reason = "INVALID_TRANSITION"

    def __init__(self, payment_id: str, current: PaymentStatus, target: PaymentStatus) -> None:
        super().__init__(f"payment {payment_id} cannot move from {current} to {target}")
        self.current = current
        self.target = target

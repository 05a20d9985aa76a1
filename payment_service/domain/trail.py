"""A payment's history: its status changes and the audit trail of every step of its saga."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from payment_service.domain.status import PaymentStatus


@dataclass(frozen=True, slots=True)
class StatusChange:
    sequence: int
    from_status: PaymentStatus | None
    to_status: PaymentStatus
    reason: str
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class PaymentStep:
    """One entry of a payment's audit trail: every step of its saga and every transition,
    in order (`step`), with what it concerned (`data`) and, for a failure, why (`error`).

    Deposit, success:  status.initiated, charge.requested, charge.accepted, status.pending,
                       provider.charge_succeeded, credit.completed, status.completed
    Deposit, the credit impossible after the charge: ... provider.charge_succeeded,
                       credit.failed, compensation.started, status.refunding,
                       refund.requested, refund.accepted, provider.refund_succeeded,
                       status.refunded (or refund.failed three times, status.requires_manual_review)
    Withdrawal, success: status.initiated, hold.placed, payout.requested, payout.accepted,
                       status.pending, provider.payout_succeeded, hold.captured,
                       status.completed
    Withdrawal, payout failed: ... provider.payout_failed, hold.released, status.failed
    Refund (its own payment): as a withdrawal with refund.* steps; its deposit records
                       refund.reserved, then refund.settled or refund.released
    A provider call not answered (timeout): <call>.outcome_unknown (noted once; the payment
                       keeps the gateway operation and stays initiated, never failed)
    The recovery worker moving it on: recovery.sync_requested (the provider asked again) or
                       recovery.resume_requested (the next step run again), with the attempt,
                       rung, outcome, provider answer and next attempt; saga.resumed for the
                       payment service's own resume sweep
    A provider contradicting a final state: review.requested (a review case is opened)
    An operator's decision on a review case: review.resolved (then, for a payment in
                       requires_manual_review, status.<resolution>)
    """

    step: int
    event_type: str
    occurred_at: datetime
    data: Mapping[str, str] = field(default_factory=dict)
    error: str = ""

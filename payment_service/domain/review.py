"""Manual-review cases: a payment an operator must decide. Plain Python: no SQL, no gRPC.

A case is opened when a payment enters requires_manual_review (its compensation refund failed
MAX_COMPENSATION_ATTEMPTS times or stayed unsettled through MAX_RECOVERY_ATTEMPTS attempts of the
recovery worker, or a payout went through but its hold could not be captured)
and when a provider event contradicts a final or settled payment. The Payment records that a
case is needed (`ReviewOpening`); the repository writes it in the same transaction as the
change that caused it. A payment has at most one open case: a second reason to look adds its
evidence to the open case instead of opening another.

    open ──claim(X)──► open, being resolved as X ──resolve(X)──► resolved     (never twice)
      └──────────────resolve(completed | failed | refunded)────────────► resolved

A resolution that moves money first (a deposit resolved as completed is credited) claims the
case before the wallet is called: a racing resolve with another resolution is refused from
then on, so the credit can never be posted for a case that another operator resolves
differently. A claim whose money movement was refused is released.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from payment_service.domain.errors import ReviewAlreadyResolved


class ReviewReason(StrEnum):
    """Why a case was opened. Stable: operators and dashboards branch on it."""

    COMPENSATION_FAILED = "COMPENSATION_FAILED"
    CAPTURE_FAILED = "CAPTURE_FAILED"
    PROVIDER_CONTRADICTION = "PROVIDER_CONTRADICTION"
    # The recovery worker's reconciliation found the payment, the wallet's ledger and the
    # provider disagreeing (OpenReviewCase); the evidence holds what each side said.
    RECONCILIATION_MISMATCH = "RECONCILIATION_MISMATCH"
    # A refunding deposit whose refund the recovery worker found unsettled attempt after
    # attempt (its outcome unknown, or its answer lost): money may have gone back or not.
    REFUND_STALLED = "REFUND_STALLED"


class ReviewStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class Resolution(StrEnum):
    """What the operator decided the payment is; named after the payment status it means."""

    COMPLETED = "completed"
    FAILED = "failed"
    REFUNDED = "refunded"


@dataclass(frozen=True, slots=True)
class ReviewOpening:
    """One reason to look at a payment: opens its case, or is added to its open one."""

    payment_id: str
    reason_code: ReviewReason
    reason: str
    source: str  # what asked: "status.requires_manual_review", or the provider event
    occurred_at: datetime
    # What each side said, for an opening from outside (reconciliation); empty otherwise.
    details: Mapping[str, str] = field(default_factory=dict)
    # Names one mismatch, so reporting it again adds nothing (`mismatch_key`); "" for the
    # payment's own openings, which its state machine makes happen once.
    key: str = ""


def mismatch_key(reason_code: ReviewReason, reason: str, details: Mapping[str, str]) -> str:
    """The same reason with the same evidence is the same mismatch, however often it is
    reported: a reconciliation that runs every few minutes opens one case, not one a run."""
    canonical = json.dumps([reason_code.value, reason, sorted(details.items())])
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Decision:
    resolution: Resolution
    note: str
    resolved_by: str
    resolved_at: datetime


@dataclass
class ReviewCase:
    case_id: str
    payment_id: str
    reason_code: ReviewReason
    reason: str
    opened_at: datetime
    status: ReviewStatus = ReviewStatus.OPEN
    # Every reason to look, the first one included, in the order they came.
    evidence: list[ReviewOpening] = field(default_factory=list)
    decision: Decision | None = None
    # The resolution an operator is carrying out (its money moving) on this open case.
    claimed: Resolution | None = None

    def claim(self, resolution: Resolution) -> None:
        """Reserves the case for `resolution` before money moves for it; the same resolution
        may claim again (a retry), another is refused (REVIEW_ALREADY_RESOLVED)."""
        self._check_open(resolution)
        self.claimed = resolution

    def release(self, resolution: Resolution) -> None:
        if self.status is ReviewStatus.OPEN and self.claimed is resolution:
            self.claimed = None

    def resolve(self, decision: Decision) -> None:
        """Records the decision; a case is resolved once only (REVIEW_ALREADY_RESOLVED)."""
        self._check_open(decision.resolution)
        self.status = ReviewStatus.RESOLVED
        self.decision = decision
        self.claimed = None

    def _check_open(self, resolution: Resolution) -> None:
        if self.status is not ReviewStatus.OPEN:
            raise ReviewAlreadyResolved(f"review case {self.case_id} is already resolved")
        if self.claimed is not None and self.claimed is not resolution:
            raise ReviewAlreadyResolved(
                f"review case {self.case_id} is being resolved as {self.claimed}"
            )

    def age(self, now: datetime) -> timedelta:
        end = self.decision.resolved_at if self.decision else now
        return end - self.opened_at

    def overdue(self, now: datetime, sla: timedelta) -> bool:
        """Open past its SLA: the alarm an operator should act on."""
        return self.status is ReviewStatus.OPEN and self.age(now) > sla

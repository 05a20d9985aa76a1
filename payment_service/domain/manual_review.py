"""The payment's side of manual review: cases opened by reconciliation or by a provider
contradicting it, and an operator's decision applied to it. The case itself is `review.py`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from payment_service.domain import events
from payment_service.domain.errors import ResolutionContradictsPayment, ReviewPaymentInFlight
from payment_service.domain.lifecycle import PaymentLifecycle
from payment_service.domain.review import Decision, Resolution, ReviewOpening, ReviewReason
from payment_service.domain.status import PaymentKind, PaymentStatus

# A final or settled payment can only be resolved as what it already is (invariant 6).
AGREEING_RESOLUTION: dict[PaymentStatus, Resolution] = {
    PaymentStatus.COMPLETED: Resolution.COMPLETED,
    PaymentStatus.PARTIALLY_REFUNDED: Resolution.COMPLETED,
    PaymentStatus.FAILED: Resolution.FAILED,
    PaymentStatus.CANCELLED: Resolution.FAILED,
    PaymentStatus.REFUNDED: Resolution.REFUNDED,
}


class ReviewSteps(PaymentLifecycle):
    def review_credit_needed(self, resolution: Resolution) -> bool:
        """Whether resolving this payment as `resolution` must first credit the wallet: a
        deposit reaches requires_manual_review only after its credit failed and then its
        compensation refund failed, so a deposit resolved as completed was never credited."""
        return (
            self.kind is PaymentKind.DEPOSIT
            and self.status is PaymentStatus.REQUIRES_MANUAL_REVIEW
            and resolution is Resolution.COMPLETED
        )

    def resolve_review(self, case_id: str, decision: Decision, *, credited: bool = False) -> None:
        """An operator's decision on this payment's review case.

        - In requires_manual_review: the payment moves to the resolution through the state
          machine (a `review.resolved` step, then the normal `payment.<status>` event). A
          deposit resolved as completed was credited just before (`credited`, key
          `<payment_id>:review-credit`); resolved as refunded, its whole amount counts as
          refunded; as failed, the note becomes its failure reason.
        - Final or settled (a provider contradicted it): only the decision is recorded, and
          only one that agrees with the status (completed for completed or partially
          refunded, failed for failed or cancelled, refunded for refunded); any other would
          move a final state: REVIEW_RESOLUTION_CONTRADICTS_PAYMENT.
        - Anything else (its saga still runs): REVIEW_PAYMENT_IN_FLIGHT.
        """
        if self.status is not PaymentStatus.REQUIRES_MANUAL_REVIEW:
            self._check_agrees(decision.resolution)
        data = {
            "case_id": case_id,
            "resolution": decision.resolution.value,
            "resolved_by": decision.resolved_by,
            "note": decision.note,
        }
        self._note("review.resolved", data, at=decision.resolved_at)
        if self.status is not PaymentStatus.REQUIRES_MANUAL_REVIEW:
            return
        if credited:
            self._note("credit.completed", {"operation_ref": self.step_ref("review-credit")})
        why = f"resolved by {decision.resolved_by}: {decision.note}"
        if decision.resolution is Resolution.FAILED:
            self.fail(why)
            return
        if decision.resolution is Resolution.REFUNDED and self.kind is PaymentKind.DEPOSIT:
            self.saga.refunded_minor = self.amount.amount_minor
        self._move(PaymentStatus(decision.resolution.value), why)

    def _check_agrees(self, resolution: Resolution) -> None:
        agreeing = AGREEING_RESOLUTION.get(self.status)
        if agreeing is None:
            raise ReviewPaymentInFlight(
                f"payment {self.payment_id} is {self.status}: its saga is still running;"
                " resolve the case once it has settled"
            )
        if resolution is not agreeing:
            raise ResolutionContradictsPayment(
                f"payment {self.payment_id} is {self.status} and stays so: it can only be"
                f" resolved as {agreeing}, not {resolution}"
            )

    def request_reconciliation_review(
        self, reason: str, details: Mapping[str, str], *, key: str
    ) -> None:
        """The ledger or the provider disagrees with this payment (the recovery worker's
        reconciliation): a case for an operator, the payment's state left as it is."""
        source = "reconciliation"
        self._note("review.requested", {"source": source, "mismatch": key}, error=reason)
        self.new_reviews.append(
            ReviewOpening(
                self.payment_id,
                ReviewReason.RECONCILIATION_MISMATCH,
                reason,
                source,
                datetime.now(UTC),
                details=dict(details),
                key=key,
            )
        )
        self._events.append(
            events.ReviewRequested(
                payment_id=self.payment_id,
                status=self.status.value,
                provider_event=source,
                reason=reason,
                gateway_operation_id=self.gateway_operation_id,
                version=self.version,
            )
        )

    def note_provider_dispute(self, provider_event: str, reason: str) -> None:
        """The gateway found the provider contradicting an operation of this payment that had
        already ended (it failed one the provider never processed, and the provider now
        reports it succeeded, say), or reporting it for another amount: money may have moved
        otherwise than this payment says. The state stays; an operator looks."""
        self._request_review(provider_event, reason)

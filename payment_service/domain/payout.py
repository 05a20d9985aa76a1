"""What the provider says of a payout (a withdrawal) or of a refund payment's refund: both
move held money, which a success captures and a failure releases."""

from __future__ import annotations

from payment_service.domain.holds import HoldSteps
from payment_service.domain.review import ReviewReason
from payment_service.domain.saga import HoldState
from payment_service.domain.status import FINAL, SETTLED, PaymentKind, PaymentStatus


class PayoutSteps(HoldSteps):
    def wants_capture(self) -> bool:
        """Whether a provider success should now take the held money for good."""
        return (
            self.kind in (PaymentKind.WITHDRAWAL, PaymentKind.REFUND)
            and self.status in (PaymentStatus.INITIATED, PaymentStatus.PENDING)
            and self.saga.hold is HoldState.PLACED
        )

    def wants_release(self) -> bool:
        """Whether a provider failure should now give the held money back."""
        return self.wants_capture()

    def apply_provider_succeeded(
        self, operation: str, *, operation_id: str, provider: str, captured: bool
    ) -> None:
        """A payout or refund went through. The held money was taken (captured): completed.
        A provider success on a payment that failed or was cancelled contradicts us: review."""
        if self.status is PaymentStatus.INITIATED and self.saga.provider_call:
            self.mark_pending(operation_id)
        if self.status is PaymentStatus.PENDING and captured:
            self.saga.provider = provider or self.saga.provider
            self._note(f"provider.{operation}_succeeded", {"operation_id": operation_id})
            self.saga.hold = HoldState.CAPTURED
            self._note("hold.captured", {"operation_ref": self.step_ref("capture")})
            self.complete()
        elif self.status in FINAL or self.status is PaymentStatus.REQUIRES_MANUAL_REVIEW:
            self._request_review(
                f"{operation}.succeeded",
                f"provider reports the {operation} of a {self.status} payment succeeded",
            )

    def apply_provider_failed(
        self, operation: str, *, operation_id: str, reason: str, released: bool
    ) -> None:
        """A payout or refund was declined by the provider: the hold was released, nothing
        moved: failed. A completed one declined afterwards: review."""
        if self.status is PaymentStatus.INITIATED and self.saga.provider_call:
            self.mark_pending(operation_id)
        if self.status is PaymentStatus.PENDING and released:
            self._note(f"provider.{operation}_failed", {"operation_id": operation_id}, error=reason)
            self.record_hold_released()
            self.fail(reason or f"{operation}_failed")
        elif self.status in SETTLED:
            self._request_review(
                f"{operation}.failed", f"provider declined the {operation} of a completed payment"
            )

    def capture_refused(self, operation: str, reason: str) -> None:
        """The provider paid out but the hold could not be captured (it expired, or the
        account was tampered with): money left without its debit. An operator must look."""
        if self.status in (PaymentStatus.INITIATED, PaymentStatus.PENDING):
            self._note("hold.capture_failed", error=reason)
            self._escalate(
                ReviewReason.CAPTURE_FAILED, f"{operation} succeeded, capture failed: {reason}"
            )

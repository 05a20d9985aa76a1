"""What the provider says of a deposit's charge; the aggregate decides what it means: credited
and completed, refunding when the wallet can never take the money in, or a review when the
provider contradicts a payment that already ended."""

from __future__ import annotations

from payment_service.domain.lifecycle import PaymentLifecycle
from payment_service.domain.status import SETTLED, PaymentKind, PaymentStatus


class ChargeSteps(PaymentLifecycle):
    def wants_credit_for_charge(self) -> bool:
        """Whether money the provider reports taken should now be credited to the wallet."""
        return self.kind is PaymentKind.DEPOSIT and self.status in (
            PaymentStatus.INITIATED,
            PaymentStatus.PENDING,
        )

    def apply_charge_succeeded(
        self, *, operation_id: str, credited: bool, credit_refused: str = ""
    ) -> None:
        """The provider took the money. Credited: completed. The credit can never apply:
        refunding. Already settled: nothing. Failed or cancelled meanwhile: the provider
        contradicts us, and an operator must look (never an overwrite of a final state)."""
        if self.status is PaymentStatus.INITIATED:
            self.mark_pending(operation_id)
        if self.status is PaymentStatus.PENDING and (credited or credit_refused):
            self._note("provider.charge_succeeded", {"operation_id": operation_id})
        if self.status is PaymentStatus.PENDING and credited:
            self._note("credit.completed", {"operation_ref": self.step_ref("credit")})
            self.complete()
        elif self.status is PaymentStatus.PENDING and credit_refused:
            self._note("credit.failed", error=credit_refused)
            self._note("compensation.started", {"compensation": "refund"})
            self.start_refund(credit_refused)
        elif self.status in (PaymentStatus.FAILED, PaymentStatus.CANCELLED):
            detail = "and the wallet was credited" if credited else "after it ended"
            self._request_review("charge.succeeded", f"provider charged the payment {detail}")

    def apply_charge_failed(self, *, operation_id: str, reason: str) -> None:
        """The provider declined. A payment already settled the other way needs review."""
        if self.status is PaymentStatus.INITIATED:
            self.mark_pending(operation_id)
        if self.can_move_to(PaymentStatus.FAILED):
            self._note("provider.charge_failed", {"operation_id": operation_id}, error=reason)
            self.fail(reason or "charge_failed")
        elif self.status in SETTLED or self.status is PaymentStatus.REFUNDING:
            self._request_review("charge.failed", f"provider declined a {self.status} payment")

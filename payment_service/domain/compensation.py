"""A deposit's compensation: the provider took money the wallet can never take in, so the saga
refunds it, each attempt with its own key, and hands it to an operator when refunding fails."""

from __future__ import annotations

from payment_service.domain.lifecycle import PaymentLifecycle
from payment_service.domain.review import ReviewReason
from payment_service.domain.saga import ProviderAnswer, ProviderCall
from payment_service.domain.status import PaymentKind, PaymentStatus

# A deposit's compensation refund is tried this many times (each with its own provider key)
# before an operator must look.
MAX_COMPENSATION_ATTEMPTS = 3


class CompensationSteps(PaymentLifecycle):
    def compensation_call(self) -> ProviderCall | None:
        """The next refund attempt of a refunding deposit, its recovery point recorded."""
        if self.kind is not PaymentKind.DEPOSIT or self.status is not PaymentStatus.REFUNDING:
            return None
        attempt = self.saga.compensation_attempts + 1
        key = self.step_ref("refund") + ("" if attempt == 1 else f":{attempt}")
        if self.saga.provider_call != key:
            self.saga.provider_call = key
            self._note("refund.requested", {"idempotency_key": key, "attempt": str(attempt)})
        return ProviderCall(
            "refund", key, self.amount, charge_operation_id=self.gateway_operation_id
        )

    def record_compensation_answer(
        self, answer: ProviderAnswer, *, operation_id: str, reason: str
    ) -> None:
        """The gateway's answer to a refund attempt. Accepted or unknown, the attempt's
        operation is kept (the recovery worker asks the provider about it) and noted once,
        however often the attempt is resumed; declined, it counts as a failed attempt."""
        if self.status is not PaymentStatus.REFUNDING:
            return
        if answer is not ProviderAnswer.DECLINED:
            seen = (self.saga.refund_operation_id, self.saga.refund_outcome)
            if not operation_id or seen == (operation_id, answer.value):
                return
            self.saga.refund_operation_id, self.saga.refund_outcome = operation_id, answer.value
            event = (
                "refund.accepted" if answer is ProviderAnswer.ACCEPTED else "refund.outcome_unknown"
            )
            self._note(event, {"operation_id": operation_id})
        else:
            self.apply_compensation_outcome(
                succeeded=False, operation_id=operation_id, reason=reason
            )

    def apply_compensation_outcome(
        self, *, succeeded: bool, operation_id: str, reason: str
    ) -> None:
        """The compensation refund went through (refunded), or failed: tried again with a
        new key, until MAX_COMPENSATION_ATTEMPTS have failed (requires_manual_review)."""
        if self.status is not PaymentStatus.REFUNDING:
            if succeeded and self.status is not PaymentStatus.REFUNDED:
                self._request_review(
                    "refund.succeeded", f"provider refunded a {self.status} payment"
                )
            return
        if succeeded:
            self._note("provider.refund_succeeded", {"operation_id": operation_id})
            self._move(PaymentStatus.REFUNDED, "")
            return
        if operation_id and operation_id == self.saga.last_failed_operation:
            return  # the gateway's answer and its event both report the same failed attempt
        self.saga.last_failed_operation = operation_id
        self.saga.refund_operation_id = self.saga.refund_outcome = ""
        self.saga.compensation_attempts += 1
        self._note(
            "refund.failed",
            {"operation_id": operation_id, "attempt": str(self.saga.compensation_attempts)},
            error=reason,
        )
        if self.saga.compensation_attempts >= MAX_COMPENSATION_ATTEMPTS:
            self._escalate(
                ReviewReason.COMPENSATION_FAILED,
                f"compensation refund failed {self.saga.compensation_attempts} times: {reason}",
            )
        else:
            self._emit_step("compensation_retry")

"""A deposit's refunds, each its own payment: reserved on the deposit when asked for, so that
refunds never add up to more than it captured, and settled on it when each one ends."""

from __future__ import annotations

from typing import Self

from common.money import Money
from payment_service.domain.errors import PaymentNotRefundable, RefundExceedsCaptured
from payment_service.domain.lifecycle import PaymentLifecycle
from payment_service.domain.requests import RefundRequest
from payment_service.domain.saga import SagaState
from payment_service.domain.status import SETTLED, PaymentKind, PaymentStatus


class RefundSteps(PaymentLifecycle):
    def refund(self, request: RefundRequest, payment_id: str = "") -> Self:
        """A refund of this deposit, as its own payment. Reserves its amount on this deposit
        at once (under the deposit's lock), so concurrent refunds can never add up to more
        than the deposit captured."""
        if self.kind is not PaymentKind.DEPOSIT or self.status not in SETTLED:
            raise PaymentNotRefundable(
                f"payment {self.payment_id} is a {self.status} {self.kind}; only a completed"
                " deposit can be refunded"
            )
        left = self.refundable_minor
        amount = request.amount or Money(left, self.amount.currency)
        if amount.currency != self.amount.currency:
            raise PaymentNotRefundable(
                f"payment {self.payment_id} was made in {self.amount.currency}, not"
                f" {amount.currency}"
            )
        if amount.amount_minor <= 0 or amount.amount_minor > left:
            raise RefundExceedsCaptured(
                f"payment {self.payment_id} has {Money(left, self.amount.currency)} left to"
                f" refund, not {amount}"
            )
        refund = self._new(
            PaymentKind.REFUND,
            amount,
            request.idempotency_key,
            payment_id,
            source_account_id=self.destination_account_id,
            parent_payment_id=self.payment_id,
            saga=SagaState(charge_operation_id=self.gateway_operation_id),
        )
        self.saga.refund_reserved_minor += amount.amount_minor
        self._note("refund.reserved", {"refund_id": refund.payment_id, "amount": str(amount)})
        return refund

    @property
    def refundable_minor(self) -> int:
        return self.amount.amount_minor - self.saga.refunded_minor - self.saga.refund_reserved_minor

    def settle_refund(self, refund: PaymentLifecycle) -> None:
        """One of this deposit's refunds ended: completed moves the deposit on (partially
        refunded, or refunded once all of it went back); failed or cancelled frees its
        reservation for another refund."""
        amount = refund.amount.amount_minor
        if refund.status is PaymentStatus.COMPLETED:
            self.saga.refund_reserved_minor -= amount
            self.saga.refunded_minor += amount
            self._note(
                "refund.settled", {"refund_id": refund.payment_id, "amount": str(refund.amount)}
            )
            target = (
                PaymentStatus.REFUNDED
                if self.saga.refunded_minor >= self.amount.amount_minor
                else PaymentStatus.PARTIALLY_REFUNDED
            )
            if target is not self.status:
                self._move(target, "")
        elif refund.status in (PaymentStatus.FAILED, PaymentStatus.CANCELLED):
            self.saga.refund_reserved_minor -= amount
            self._note(
                "refund.released", {"refund_id": refund.payment_id, "amount": str(refund.amount)}
            )

    def settles_refund(self) -> bool:
        """Whether this refund has just ended, so its deposit must learn of it."""
        return self.kind is PaymentKind.REFUND and any(
            change.to_status
            in (PaymentStatus.COMPLETED, PaymentStatus.FAILED, PaymentStatus.CANCELLED)
            for change in self.new_changes
        )

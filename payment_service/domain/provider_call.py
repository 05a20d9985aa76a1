"""Asking the provider (a deposit's charge, a withdrawal's payout, a refund payment's refund):
the recovery point recorded before the call, and what the gateway answered."""

from __future__ import annotations

from datetime import datetime

from common.money import Money
from payment_service.domain.holds import HoldSteps
from payment_service.domain.lifecycle import step_ref
from payment_service.domain.saga import HoldState, ProviderAnswer, ProviderCall
from payment_service.domain.status import PaymentKind, PaymentStatus


def deposit_charge(payment_id: str, amount: Money, payment_method: str) -> ProviderCall:
    """A deposit's charge: its key derived from the payment (`step_ref`), so asking again,
    from a redelivered event or a resumed saga, can never charge twice."""
    return ProviderCall("charge", step_ref(payment_id, "charge"), amount, payment_method)


class ProviderCallSteps(HoldSteps):
    def begin_provider_call(self) -> ProviderCall | None:
        """The recovery point before the provider is asked: once recorded, the payment can
        no longer be cancelled. None when there is nothing to ask (cancelled, already past
        it, or a withdrawal without its hold)."""
        if self.status is not PaymentStatus.INITIATED or self.kind is PaymentKind.TRANSFER:
            return None
        if self.kind is not PaymentKind.DEPOSIT and self.saga.hold is not HoldState.PLACED:
            return None
        call = self.provider_call()
        if not self.saga.provider_call:
            self.saga.provider_call = call.operation
            self._note_requested(call)
        return call

    def _note_requested(self, call: ProviderCall, at: datetime | None = None) -> None:
        self._note(f"{call.operation}.requested", {"idempotency_key": call.idempotency_key}, at=at)

    def provider_call(self) -> ProviderCall:
        if self.kind is PaymentKind.DEPOSIT:
            return deposit_charge(self.payment_id, self.amount, self.payment_method)
        if self.kind is PaymentKind.WITHDRAWAL:
            return ProviderCall(
                "payout", self.step_ref("payout"), self.amount, destination=self.saga.destination
            )
        return ProviderCall(
            "refund",
            self.step_ref("refund"),
            self.amount,
            charge_operation_id=self.saga.charge_operation_id,
        )

    def record_provider_answer(
        self,
        answer: ProviderAnswer,
        *,
        operation_id: str,
        reason: str,
        requested_at: datetime | None = None,
    ) -> None:
        """The gateway's answer to the step that asked the provider. Only an INITIATED
        payment learns from it: later, the provider's own events (which may have overtaken
        the answer) decide. A declined withdrawal or refund must have released its hold."""
        if self.status is not PaymentStatus.INITIATED:
            return
        operation = self.saga.provider_call or self.provider_call().operation
        if answer is ProviderAnswer.UNKNOWN:
            self._outcome_unknown(operation, operation_id)
            return
        if not self.saga.provider_call:  # a deposit charged before recovery points existed
            self.saga.provider_call = operation
            self._note_requested(self.provider_call(), at=requested_at)
        if answer is ProviderAnswer.DECLINED:
            self._note(f"{operation}.declined", {"operation_id": operation_id}, error=reason)
            self.record_hold_released()
            self.fail(reason or f"{operation}_failed")
        else:
            self._note(f"{operation}.accepted", {"operation_id": operation_id})
            self.mark_pending(operation_id)

    def _outcome_unknown(self, operation: str, operation_id: str) -> None:
        """The provider did not answer: it may have acted. The payment stays initiated (the
        step is retried with the same key) and keeps the gateway's operation, so the recovery
        worker can ask the provider about it; noted once, however often retried."""
        if not operation_id or operation_id == self.gateway_operation_id:
            return
        self.gateway_operation_id = operation_id
        self._note(f"{operation}.outcome_unknown", {"operation_id": operation_id})

"""A payment on the request path, before the provider is asked: a withdrawal or a refund
holds its money in the wallet first, the wallet may refuse, a transfer completes in one wallet
operation, and the caller may cancel (its hold is released afterwards)."""

from __future__ import annotations

from payment_service.domain.errors import PaymentNotCancellable
from payment_service.domain.lifecycle import PaymentLifecycle
from payment_service.domain.saga import HoldState
from payment_service.domain.status import PaymentKind, PaymentStatus


class HoldSteps(PaymentLifecycle):
    def needs_hold(self) -> bool:
        return (
            self.kind in (PaymentKind.WITHDRAWAL, PaymentKind.REFUND)
            and self.status is PaymentStatus.INITIATED
            and self.saga.hold is HoldState.NONE
        )

    def record_hold(self, hold_id: str) -> None:
        """The wallet holds the money: the provider may now be asked (`payment.funds_held`).
        A payment that ended (cancelled, or failed by a concurrent attempt) while its hold was
        being placed keeps the hold too, so that it is released (`needs_hold_release`)."""
        ended = self.status in (PaymentStatus.FAILED, PaymentStatus.CANCELLED)
        if ended and self.saga.hold is HoldState.NONE:
            # Noted, so that the hold is stored (a save without a step writes nothing).
            self.saga.hold_id, self.saga.hold = hold_id, HoldState.PLACED
            self._note("hold.placed", {"hold_id": hold_id, "after": self.status.value})
        if not self.needs_hold():
            return
        self.saga.hold_id, self.saga.hold = hold_id, HoldState.PLACED
        self._note("hold.placed", {"hold_id": hold_id, "operation_ref": self.step_ref("hold")})
        self._emit_step("funds_held")

    def reject(self, reason: str, message: str) -> None:
        """The wallet refused what the request path asked (no funds, account frozen, no FX
        rate, ...): nothing moved and nothing will."""
        if self.status is not PaymentStatus.INITIATED:
            return
        self._note(f"{self._first_step}.refused", error=message)
        self.fail(reason.lower())

    @property
    def _first_step(self) -> str:
        return "transfer" if self.kind is PaymentKind.TRANSFER else "hold"

    def needs_hold_release(self) -> bool:
        return self.saga.hold is HoldState.PLACED and self.status in (
            PaymentStatus.FAILED,
            PaymentStatus.CANCELLED,
        )

    def record_hold_released(self) -> None:
        if self.saga.hold is HoldState.PLACED:
            self.saga.hold = HoldState.RELEASED
            self._note("hold.released", {"operation_ref": self.step_ref("release")})

    def complete_transfer(self, transaction_id: str) -> None:
        if self.kind is PaymentKind.TRANSFER and self.status is PaymentStatus.INITIATED:
            self._note("transfer.completed", {"transaction_id": transaction_id})
            self.complete()

    def cancel(self) -> None:
        """Stops a payment the provider has not been asked about. Its hold (if any) is
        released afterwards from the durable `payment.cancelled` event."""
        if (
            self.status is not PaymentStatus.INITIATED
            or self.saga.provider_call
            or (self.kind is PaymentKind.TRANSFER)
        ):
            if self.kind is PaymentKind.DEPOSIT:
                raise PaymentNotCancellable(
                    f"payment {self.payment_id} is a deposit, whose charge is requested when"
                    " it is created; only a payment not yet sent to the provider can be"
                    " cancelled"
                )
            raise PaymentNotCancellable(
                f"payment {self.payment_id} is {self.status}"
                + (" and the provider was already asked" if self.saga.provider_call else "")
                + "; only a payment not yet sent to the provider can be cancelled"
            )
        self._note("cancel.requested")
        self._move(PaymentStatus.CANCELLED, "cancelled by the caller")

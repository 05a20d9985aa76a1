"""The payment aggregate. Plain Python: no SQL, no gRPC.

A payment's states and who moves it into each are drawn in `status.py`. `Payment` is one
aggregate written as its flows, one module each, over one lifecycle (`lifecycle.py`: its
fields, state machine moves, audit trail and events):

- creation (here): a deposit, a withdrawal or a transfer, from its request (`requests.py`);
- `holds.py`: the request path before the provider is asked (holds, refusals, a transfer's
  one wallet operation, cancelling);
- `provider_call.py`: asking the provider (charge, payout, refund) and the gateway's answer;
- `charge.py`: what the provider says of a deposit's charge;
- `payout.py`: what it says of a payout or a refund payment's refund (held money);
- `refunds.py`: a deposit's refunds, reserved and settled on it;
- `compensation.py`: refunding a deposit the wallet could not take in;
- `recovery.py`: the resume sweep and the recovery worker moving a stuck payment on;
- `manual_review.py`: review cases it asks for and an operator's decision on it.

Each flow is a base class of `Payment` rather than a function it delegates to: every method
is then written once, under its public name, and reads the aggregate's fields directly.
"""

from __future__ import annotations

from payment_service.domain.charge import ChargeSteps
from payment_service.domain.compensation import CompensationSteps
from payment_service.domain.holds import HoldSteps
from payment_service.domain.manual_review import ReviewSteps
from payment_service.domain.payout import PayoutSteps
from payment_service.domain.provider_call import ProviderCallSteps
from payment_service.domain.recovery import RecoverySteps
from payment_service.domain.refunds import RefundSteps
from payment_service.domain.requests import DepositRequest, TransferRequest, WithdrawalRequest
from payment_service.domain.saga import SagaState
from payment_service.domain.status import PaymentKind


class Payment(
    ProviderCallSteps,
    ChargeSteps,
    PayoutSteps,
    RefundSteps,
    CompensationSteps,
    RecoverySteps,
    ReviewSteps,
    HoldSteps,
):
    """A deposit, withdrawal, transfer or refund and its saga: one aggregate, loaded, decided
    on and saved as one, whichever of its flows a method comes from."""

    @classmethod
    def deposit(cls, request: DepositRequest, payment_id: str = "") -> Payment:
        """A deposit is created with its charge's recovery point: the create's commit is
        what the saga charges from, with the key derived from the payment, so no step is
        written between the create and the charge (and a deposit is never cancellable)."""
        payment = cls._new(
            PaymentKind.DEPOSIT,
            request.amount,
            request.idempotency_key,
            payment_id,
            destination_account_id=request.account_id,
            payment_method=request.payment_method,
            # In the state `payment.initiated` carries, so the saga charges from the event.
            saga=SagaState(provider_call="charge"),
        )
        payment._note_requested(payment.provider_call())
        return payment

    @classmethod
    def withdrawal(cls, request: WithdrawalRequest, payment_id: str = "") -> Payment:
        return cls._new(
            PaymentKind.WITHDRAWAL,
            request.amount,
            request.idempotency_key,
            payment_id,
            source_account_id=request.account_id,
            saga=SagaState(destination=request.destination),
        )

    @classmethod
    def transfer(cls, request: TransferRequest, payment_id: str = "") -> Payment:
        return cls._new(
            PaymentKind.TRANSFER,
            request.amount,
            request.idempotency_key,
            payment_id,
            source_account_id=request.source_account_id,
            destination_account_id=request.destination_account_id,
        )

"""Payments in the states the domain tests start from."""

from datetime import UTC, datetime

from common.money import Money
from payment_service.domain.model import Payment
from payment_service.domain.requests import DepositRequest
from payment_service.domain.review import Decision, Resolution
from payment_service.domain.saga import ProviderAnswer

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def deposit(amount: int = 1000) -> Payment:
    return Payment.deposit(
        DepositRequest(
            idempotency_key="key-1",
            account_id="0b7d4d1e-55f4-4c43-8c3e-2a51f3c1d6a1",
            amount=Money(amount, "USD"),
            payment_method="pm_card_ok",
        )
    )


def pending_deposit() -> Payment:
    payment = deposit()
    payment.record_provider_answer(ProviderAnswer.ACCEPTED, operation_id="op-1", reason="")
    payment.pull_events()
    return payment


def refunding() -> Payment:
    payment = deposit()
    payment.mark_pending("op-1")
    payment.apply_charge_succeeded(operation_id="op-1", credited=False, credit_refused="closed")
    return payment


def decision(resolution: Resolution = Resolution.REFUNDED) -> Decision:
    return Decision(resolution, "refunded by hand at the provider", "alice", NOW)

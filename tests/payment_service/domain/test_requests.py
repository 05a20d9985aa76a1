"""Requests and the idempotency claims they make."""

import pytest

from common.errors import IdempotencyConflict
from common.money import Money
from payment_service.domain.requests import DepositRequest


def request(amount: int = 1000, *, method: str = "pm_card_ok", caller: str = "c") -> DepositRequest:
    return DepositRequest(
        idempotency_key="key-1",
        account_id="0b7d4d1e-55f4-4c43-8c3e-2a51f3c1d6a1",
        amount=Money(amount, "USD"),
        payment_method=method,
        caller=caller,
    )


def test_a_replayed_key_must_ask_for_the_same_payment() -> None:
    claim = request(1000).claim("p-1")
    claim.check_same_request(request(1000).fingerprint)
    claim.check_same_request(request(1000, caller="someone else").fingerprint)
    for other in (request(999), request(1000, method="pm_card_declined")):
        with pytest.raises(IdempotencyConflict):
            claim.check_same_request(other.fingerprint)

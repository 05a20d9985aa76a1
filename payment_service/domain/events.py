"""Facts the payment service publishes: one per status change, `payment.<to_status>`."""

from __future__ import annotations

from dataclasses import dataclass

from common.money import Money


@dataclass(frozen=True, slots=True)
class PaymentStatusChanged:
    payment_id: str
    kind: str
    from_status: str
    to_status: str
    amount: Money
    source_account_id: str
    destination_account_id: str
    failure_reason: str
    version: int
    payment_method: str = ""

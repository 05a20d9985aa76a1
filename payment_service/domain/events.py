"""Facts the payment service publishes: one per status change, `payment.<to_status>`, and
`payment.review_requested` when a provider contradicts a payment's final state, and
`payment.<step>` for the saga steps its own next step runs from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

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
    parent_payment_id: str = ""
    # The provider call whose recovery point the payment had recorded at this change (a
    # deposit's "charge" from its creation), so the saga can make it without a read.
    provider_call: str = ""


@dataclass(frozen=True, slots=True)
class ReviewRequested:
    """A provider event contradicts the payment: an operator must decide (a manual-review
    case); the payment's state is left as it is."""

    payment_id: str
    status: str
    provider_event: str
    reason: str
    gateway_operation_id: str
    version: int


@dataclass(frozen=True, slots=True)
class PaymentStepRecorded:
    """A saga step the saga's next step reacts to (`payment.funds_held`,
    `payment.compensation_retry`): durable, so a crash right after it loses nothing."""

    payment_id: str
    kind: str
    step: str
    version: int


PaymentEvent: TypeAlias = PaymentStatusChanged | ReviewRequested | PaymentStepRecorded

"""The simulator's records: charges, webhook events and the charge request schema."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ChargeStatus = Literal["pending", "succeeded", "failed"]
DeliveryState = Literal["pending", "delivered", "failed"]

# Magic payment method tokens, in the style of real providers' test cards. Anything else succeeds.
DECLINING_PAYMENT_METHODS: dict[str, str] = {
    "pm_card_declined": "card_declined",
    "pm_card_insufficient_funds": "insufficient_funds",
}

# Downstream services keep amounts in int64 (protobuf, PostgreSQL BIGINT); refuse what they cannot.
MAX_AMOUNT_MINOR = 2**63 - 1


class ChargeRequest(BaseModel):
    # Strict, closed schema: "100" is not an amount and a misspelt field is an error, as with real
    # providers, so client bugs surface here rather than as a silently different charge.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    idempotency_key: str = Field(min_length=1, max_length=255)
    amount_minor: int = Field(gt=0, le=MAX_AMOUNT_MINOR)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    payment_method: str = Field(min_length=1, max_length=255)
    reference: str = Field(min_length=1, max_length=255)


@dataclass
class Charge:
    id: str
    request: ChargeRequest
    created: int = field(default_factory=lambda: int(time.time()))
    status: ChargeStatus = "pending"
    failure_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "amount_minor": self.request.amount_minor,
            "currency": self.request.currency,
            "reference": self.request.reference,
            "idempotency_key": self.request.idempotency_key,
            "failure_reason": self.failure_reason,
            "created": self.created,
        }


@dataclass
class WebhookEvent:
    id: str
    type: str
    charge_id: str
    # The exact bytes that are signed and sent; kept so that every attempt and every
    # redelivery carries an identical body.
    body: str
    created: int
    attempts: int = 0
    last_status: int | None = None
    state: DeliveryState = "pending"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "charge_id": self.charge_id,
            "created": self.created,
            "attempts": self.attempts,
            "last_status": self.last_status,
            "state": self.state,
        }

"""The simulator's records: operations (charges, payouts, refunds), webhook events, requests."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Kind = Literal["charge", "payout", "refund"]
KINDS: tuple[Kind, ...] = ("charge", "payout", "refund")
OperationStatus = Literal["processing", "succeeded", "failed"]
DeliveryState = Literal["pending", "delivered", "failed"]

ID_PREFIX: dict[Kind, str] = {"charge": "ch", "payout": "po", "refund": "re"}

# Magic payment method tokens, in the style of real providers' test cards. Anything else succeeds
# (unless the decline rate says otherwise).
DECLINING_PAYMENT_METHODS: dict[str, str] = {
    "pm_card_declined": "card_declined",
    "pm_card_insufficient_funds": "insufficient_funds",
}
# Magic payout destinations, likewise.
DECLINING_DESTINATIONS: dict[str, str] = {
    "acct_fail": "account_closed",
    "acct_closed": "account_closed",
}
DECLINE_REASON: dict[Kind, str] = {
    "charge": "card_declined",
    "payout": "account_closed",
    "refund": "refund_declined",
}

# Downstream services keep amounts in int64 (protobuf, PostgreSQL BIGINT); refuse what they cannot.
MAX_AMOUNT_MINOR = 2**63 - 1


class _Request(BaseModel):
    # Strict, closed schema: "100" is not an amount and a misspelt field is an error, as with real
    # providers, so client bugs surface here rather than as a silently different operation.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    # The Idempotency-Key header is the way to send it; the body field is kept for old clients.
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)
    amount_minor: int = Field(gt=0, le=MAX_AMOUNT_MINOR)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    reference: str = Field(min_length=1, max_length=255)


class ChargeRequest(_Request):
    payment_method: str = Field(min_length=1, max_length=255)


class PayoutRequest(_Request):
    destination: str = Field(min_length=1, max_length=255)


class RefundRequest(_Request):
    charge: str = Field(min_length=1, max_length=255)


REQUEST_MODELS: dict[Kind, type[_Request]] = {
    "charge": ChargeRequest,
    "payout": PayoutRequest,
    "refund": RefundRequest,
}


@dataclass
class Operation:
    id: str
    kind: Kind
    idempotency_key: str
    # The request as received, minus the idempotency key: a replay must match it exactly.
    request: dict[str, Any]
    created: int = field(default_factory=lambda: int(time.time()))
    status: OperationStatus = "processing"
    failure_reason: str | None = None
    # W3C trace context of the request that created it: its webhooks continue that trace.
    trace: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "object": self.kind,
            "status": self.status,
            "amount_minor": self.request["amount_minor"],
            "currency": self.request["currency"],
            "reference": self.request["reference"],
            "idempotency_key": self.idempotency_key,
            "failure_reason": self.failure_reason,
            "created": self.created,
        }
        if self.kind == "refund":
            body["charge"] = self.request["charge"]
        return body

    def record(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class WebhookEvent:
    id: str
    type: str
    operation_id: str
    # The exact bytes that are signed and sent; kept so that every attempt and every
    # redelivery carries an identical body.
    body: str
    created: int
    attempts: int = 0
    last_status: int | None = None
    state: DeliveryState = "pending"
    # The trace context of its operation, sent as `traceparent` with every attempt.
    trace: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "operation_id": self.operation_id,
            # Kept under its old name for clients written when only charges existed.
            "charge_id": self.operation_id,
            "created": self.created,
            "attempts": self.attempts,
            "last_status": self.last_status,
            "state": self.state,
        }

    def record(self) -> dict[str, Any]:
        return asdict(self)

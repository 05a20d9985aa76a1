"""The providers' webhook body, parsed only after its signature verified.

    {"id": "evt_..", "type": "<charge|payout|refund>.<processing|succeeded|failed>",
     "created": <unix seconds>,
     "data": {"id" | "charge_id", "reference", "amount_minor", "currency", "failure_reason"}}

Unknown fields are ignored (providers add fields over time) but known ones must have their
documented types. An event type we do not know is refused (400): the provider learns at once
that we cannot act on it, rather than us recording what we can never apply.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# The largest second a protobuf Timestamp can carry (9999-12-31T23:59:59Z).
MAX_TIMESTAMP = 253_402_300_799
MAX_ID = 255
MAX_AMOUNT_MINOR = 2**63 - 1
KNOWN_EVENT_TYPES = frozenset(
    f"{kind}.{status}"
    for kind in ("charge", "payout", "refund")
    for status in ("processing", "pending", "succeeded", "failed")
)


class MalformedWebhook(Exception):
    def __init__(self, field: str, message: str, code: str = "malformed_payload") -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.code = code


class _Data(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    id: str | None = Field(default=None, min_length=1, max_length=MAX_ID)
    charge_id: str | None = Field(default=None, min_length=1, max_length=MAX_ID)
    reference: str | None = Field(default=None, max_length=MAX_ID)
    amount_minor: int | None = Field(default=None, gt=0, le=MAX_AMOUNT_MINOR)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    status: str | None = None
    failure_reason: str | None = Field(default=None, max_length=MAX_ID)


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    id: str = Field(min_length=1, max_length=MAX_ID)
    type: str = Field(min_length=1, max_length=128)
    created: int = Field(ge=0, le=MAX_TIMESTAMP)
    data: _Data


@dataclass(frozen=True, slots=True)
class ProviderCallback:
    event_id: str
    event_type: str
    created: int
    provider_reference: str
    failure_reason: str
    # Our operation id as the provider echoes it ("" when it does not).
    operation_reference: str
    amount_minor: int | None
    currency: str | None


def parse_callback(body: bytes) -> ProviderCallback:
    try:
        parsed = _Body.model_validate_json(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "body"
        raise MalformedWebhook(field, error["msg"]) from None
    if parsed.type not in KNOWN_EVENT_TYPES:
        raise MalformedWebhook("type", f"unknown event type {parsed.type!r}", "unknown_event_type")
    data = parsed.data
    provider_reference = data.id or data.charge_id
    if not provider_reference:
        raise MalformedWebhook("data.id", "is required")
    if (data.amount_minor is None) != (data.currency is None):
        raise MalformedWebhook("data.amount_minor", "amount_minor and currency come together")
    return ProviderCallback(
        event_id=parsed.id,
        event_type=parsed.type,
        created=parsed.created,
        provider_reference=provider_reference,
        failure_reason=data.failure_reason or "",
        operation_reference=data.reference or "",
        amount_minor=data.amount_minor,
        currency=data.currency,
    )


def unverified_reference(body: bytes) -> str:
    """The operation a body names, read without trusting it: only ever used to ask the
    provider itself (a sync), never to apply anything."""
    try:
        parsed = _Body.model_validate_json(body)
    except ValidationError:
        return ""
    return parsed.data.reference or ""

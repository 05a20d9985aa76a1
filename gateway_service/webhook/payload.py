"""The simulator's webhook body, parsed only after its signature verified.

    {"id": "evt_..", "type": "charge.succeeded", "created": <unix seconds>,
     "data": {"charge_id", "reference", "amount_minor", "currency", "status", "failure_reason"}}

Unknown fields are ignored (providers add fields over time) but known ones must have their
documented types. Event types are not checked here: the gateway records ones it does not
understand, so nothing a provider says is dropped at the edge.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# The largest second a protobuf Timestamp can carry (9999-12-31T23:59:59Z).
MAX_TIMESTAMP = 253_402_300_799
MAX_ID = 255


class MalformedWebhook(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class _Data(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    charge_id: str | None = Field(default=None, min_length=1, max_length=MAX_ID)
    reference: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
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
    charge_id: str
    failure_reason: str


def parse_callback(body: bytes) -> ProviderCallback:
    try:
        parsed = _Body.model_validate_json(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "body"
        raise MalformedWebhook(field, error["msg"]) from None
    if parsed.type.startswith("charge.") and not parsed.data.charge_id:
        raise MalformedWebhook("data.charge_id", "is required for charge events")
    return ProviderCallback(
        event_id=parsed.id,
        event_type=parsed.type,
        created=parsed.created,
        charge_id=parsed.data.charge_id or "",
        failure_reason=parsed.data.failure_reason or "",
    )

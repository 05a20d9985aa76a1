"""Conversions between protobuf messages and common domain values, shared by the servicers."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from common.errors import FieldViolation, ValidationError
from common.money import Money
from paysuite.common.v1 import money_pb2


def money_from_request(message: money_pb2.Money, *, field: str, present: bool) -> Money:
    """A positive request amount; `present` is the caller's HasField, so a missing amount is
    reported as missing rather than as zero."""
    if not present:
        raise ValidationError(FieldViolation(field, "is required"))
    return Money.positive(message.amount_minor, message.currency, field=field)


def money_to_proto(money: Money) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=money.amount_minor, currency=money.currency)


def money_from_proto(message: money_pb2.Money) -> Money:
    return Money(message.amount_minor, message.currency)


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts

"""Conversions between protobuf messages and common domain values, shared by the servicers."""

from __future__ import annotations

from datetime import UTC, datetime

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


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(value: datetime | None) -> Timestamp | None:
    """The Timestamp Timestamp.FromDatetime makes (a naive datetime taken as UTC), in integer
    arithmetic on a timedelta: FromDatetime goes through a time tuple and calendar.timegm, at
    about five times the cost, and every answer with a time in it pays for it."""
    parts = timestamp_parts(value)
    if parts is None:
        return None
    return Timestamp(seconds=parts[0], nanos=parts[1])


def timestamp_parts(value: datetime | None) -> tuple[int, int] | None:
    """`timestamp(value)`'s seconds and nanos, for a Timestamp filled in place."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    since = value - _EPOCH
    return since.days * 86_400 + since.seconds, since.microseconds * 1000

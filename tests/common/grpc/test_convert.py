"""Times to Timestamps as protobuf's own FromDatetime makes them, by cheaper arithmetic."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

from google.protobuf.timestamp_pb2 import Timestamp

from common.grpc.convert import timestamp


def _from_datetime(value: datetime) -> tuple[int, int]:
    expected = Timestamp()
    expected.FromDatetime(value)
    return expected.seconds, expected.nanos


def test_a_timestamp_is_what_from_datetime_makes() -> None:
    dice = random.Random(7)
    cases = [
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC),  # before the epoch: floored
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2026, 12, 5, 22, 30, 1, 123_456),  # naive: taken as UTC
        datetime(
            2026, 12, 5, 22, 30, 1, 123_456, tzinfo=timezone(timedelta(hours=-5, minutes=-30))
        ),
    ]
    for _ in range(300):
        at = datetime(1, 1, 2, tzinfo=UTC) + timedelta(
            microseconds=dice.randrange(315_537_600_000 * 10**6)
        )
        cases += [
            at,
            at.replace(tzinfo=None),
            at.astimezone(timezone(timedelta(hours=dice.randint(-12, 12)))),
        ]
    for value in cases:
        stamp = timestamp(value)
        assert stamp is not None
        assert (stamp.seconds, stamp.nanos) == _from_datetime(value), value
    assert timestamp(None) is None

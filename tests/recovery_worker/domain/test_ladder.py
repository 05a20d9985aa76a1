from datetime import timedelta

import pytest

from recovery_worker.domain.ladder import Ladder

LADDER = Ladder.starting_at(timedelta(minutes=1))


@pytest.mark.parametrize(
    ("age", "rung"),
    [
        (timedelta(seconds=59), None),
        (timedelta(minutes=1), 0),
        (timedelta(minutes=4), 0),
        (timedelta(minutes=5), 1),
        (timedelta(minutes=59), 1),
        (timedelta(hours=1), 2),
        (timedelta(hours=23), 2),
        (timedelta(days=1), 3),
        (timedelta(days=1, hours=23), 3),
        (timedelta(days=2), 4),
        (timedelta(days=9), 11),
    ],
)
def test_rungs_are_one_minute_five_minutes_one_hour_then_daily(
    age: timedelta, rung: int | None
) -> None:
    assert LADDER.rung_at(age) == rung


def test_a_rung_is_due_once_and_the_next_only_when_reached() -> None:
    assert LADDER.due(timedelta(minutes=2), None) == 0
    assert LADDER.due(timedelta(minutes=3), 0) is None
    assert LADDER.due(timedelta(minutes=6), 0) == 1


def test_a_payment_found_late_is_tried_at_once_at_the_rung_it_reached() -> None:
    assert LADDER.due(timedelta(days=3), None) == 5


def test_a_first_rung_beyond_five_minutes_drops_the_rungs_it_passed() -> None:
    ladder = Ladder.starting_at(timedelta(minutes=10))
    assert ladder.rungs == (timedelta(minutes=10), timedelta(hours=1), timedelta(days=1))
    assert ladder.rung_at(timedelta(minutes=10)) == 0
    assert ladder.rung_at(timedelta(days=2)) == 3


@pytest.mark.parametrize("rung", range(8))
def test_each_rung_is_reached_when_it_says(rung: int) -> None:
    at = LADDER.reached_at(rung)
    assert LADDER.rung_at(at) == rung
    assert LADDER.rung_at(at - timedelta(seconds=1)) == (rung - 1 if rung else None)

"""The token bucket's arithmetic (the Python twin of the Lua script), and who gets which rate."""

from __future__ import annotations

import pytest

from common.auth import Principal, Role
from common.config import Settings, parse_rate_limits
from common.ratelimit import Bucket, Rate, rate_for, take

RATE = Rate(per_s=2.0, burst=3.0)


def test_a_new_caller_has_a_full_burst_then_waits_for_the_next_token() -> None:
    bucket = None
    for _ in range(3):
        bucket, wait = take(bucket, RATE, now=100.0)
        assert wait == 0.0
    bucket, wait = take(bucket, RATE, now=100.0)
    assert wait == pytest.approx(0.5)  # one token at 2/s
    assert bucket.tokens == pytest.approx(0.0)


def test_tokens_come_back_at_the_rate_and_never_above_the_burst() -> None:
    bucket, wait = take(Bucket(tokens=0.0, at=10.0), RATE, now=10.25)
    assert wait == pytest.approx(0.25)  # half a token there, half to go
    bucket, wait = take(bucket, RATE, now=10.5)
    assert wait == 0.0
    bucket, _ = take(Bucket(tokens=0.0, at=0.0), RATE, now=1000.0)
    assert bucket.tokens == pytest.approx(RATE.burst - 1)


def test_a_refused_call_takes_nothing() -> None:
    bucket, _ = take(Bucket(tokens=0.5, at=0.0), RATE, now=0.0)
    assert bucket.tokens == pytest.approx(0.5)


def test_a_clock_going_backwards_adds_no_tokens() -> None:
    bucket, wait = take(Bucket(tokens=0.0, at=10.0), RATE, now=9.0)
    assert wait > 0
    assert bucket.tokens == 0.0


RATES = {"user": Rate(10, 20), "operator": Rate(1, 2)}


@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        ({Role.USER}, Rate(10, 20)),
        ({Role.OPERATOR}, Rate(1, 2)),
        ({Role.USER, Role.OPERATOR}, Rate(10, 20)),  # the most generous of its roles
        ({Role.SERVICE}, None),  # not listed: unlimited
        ({Role.USER, Role.SERVICE}, None),
    ],
)
def test_the_rate_of_a_principal_is_its_most_generous_roles(
    roles: set[Role], expected: Rate | None
) -> None:
    assert rate_for(Principal("someone", frozenset(roles)), RATES) == expected


def test_rate_limits_parse_by_role_with_the_burst_defaulting_to_the_rate() -> None:
    assert parse_rate_limits("user=200:400, operator=50") == {
        "user": (200.0, 400.0),
        "operator": (50.0, 50.0),
    }
    assert parse_rate_limits("") == {}
    assert Settings(rate_limits="service=5:10").rate_limit_table() == {"service": (5.0, 10.0)}


@pytest.mark.parametrize(
    "text", ["merchant=1", "user", "user=0", "user=-1:2", "user=1:0.5", "user=x", "user=inf"]
)
def test_bad_rate_limits_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="ROLE=PER_S"):
        parse_rate_limits(text)


def test_the_settings_know_every_role() -> None:
    assert parse_rate_limits(",".join(f"{role.value}=1" for role in Role)).keys() == {
        role.value for role in Role
    }

from __future__ import annotations

from common.grpc.deadlines import MIN_TIMEOUT_S, deadline_var, remaining, set_deadline


def test_outside_a_request_a_call_gets_its_own_timeout() -> None:
    assert remaining(5.0) == 5.0


def test_a_request_with_less_time_left_shortens_every_downstream_call() -> None:
    token = set_deadline(0.8)
    try:
        assert 0.7 < remaining(5.0) <= 0.8
        assert remaining(0.1) == 0.1
    finally:
        deadline_var.reset(token)
    assert remaining(5.0) == 5.0


def test_a_request_past_its_deadline_still_gives_a_call_time_to_fail_cleanly() -> None:
    token = set_deadline(-1.0)
    try:
        assert remaining(5.0) == MIN_TIMEOUT_S
    finally:
        deadline_var.reset(token)


def test_a_caller_without_a_deadline_sets_none() -> None:
    token = set_deadline(None)
    try:
        assert remaining(2.0) == 2.0
    finally:
        deadline_var.reset(token)

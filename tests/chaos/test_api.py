"""Both doors read alike: the HTTP facade's answers map back to the gRPC codes they mirror."""

from __future__ import annotations

import json

import pytest

from chaos.api import Request, _http_answer


def test_an_accepted_request_carries_its_payment() -> None:
    body = json.dumps({"transaction_id": "p-1", "status": "initiated"})

    assert _http_answer(202, body) == ("OK", "", "p-1", "initiated", "")


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (
            409,
            {"error": {"code": "already_exists", "reason": "IDEMPOTENCY_KEY_REUSED"}},
            "ALREADY_EXISTS",
        ),
        (409, {"error": {"code": "aborted"}}, "ABORTED"),
        (
            422,
            {"error": {"code": "failed_precondition", "reason": "INSUFFICIENT_FUNDS"}},
            "FAILED_PRECONDITION",
        ),
        (503, {"error": {"code": "unavailable"}}, "UNAVAILABLE"),
        (500, {}, "INTERNAL"),
        (418, {}, "UNKNOWN"),
    ],
)
def test_refusals_map_to_the_grpc_code(status: int, body: dict[str, object], code: str) -> None:
    assert _http_answer(status, json.dumps(body))[0] == code


def test_a_body_that_is_not_json_is_still_an_answer() -> None:
    assert _http_answer(502, "<html>bad gateway</html>")[0] == "UNKNOWN"


def test_one_key_one_request_whatever_the_key() -> None:
    first = Request(op="deposit", key="a", account_id="x", amount_minor=5, currency="USD")
    same = Request(op="deposit", key="b", account_id="x", amount_minor=5, currency="USD")
    other = Request(op="deposit", key="a", account_id="x", amount_minor=6, currency="USD")

    assert first.text() == same.text() != other.text()


def test_a_429_is_resource_exhausted_which_the_workload_repeats() -> None:
    body = {"error": {"code": "resource_exhausted", "message": "busy", "reason": "OVERLOADED"}}
    outcome, reason, *_ = _http_answer(429, json.dumps(body))
    assert (outcome, reason) == ("RESOURCE_EXHAUSTED", "OVERLOADED")

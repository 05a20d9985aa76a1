"""Both doors read alike: the HTTP facade's answers map back to the gRPC codes they mirror."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from chaos.api import Request, _http_answer
from chaos.history import Call, History
from chaos.workload import Accounts, Client, Recorder, Shared, Watcher


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


async def test_the_workload_waits_the_delay_and_repeats_with_the_same_key() -> None:
    class RefusingTwice:
        def __init__(self) -> None:
            self.sent: list[Request] = []

        async def send(self, client: int, request: Request, **_: Any) -> Call:
            self.sent.append(request)
            refused = len(self.sent) <= 2
            return Call(
                client=client,
                op=request.op,
                via="grpc",
                key=request.key,
                request=request.text(),
                started=0.0,
                ended=0.0,
                outcome="RESOURCE_EXHAUSTED" if refused else "FAILED_PRECONDITION",
                retry_after_s=0.01 if refused else None,
            )

    api = RefusingTwice()
    recorder = Recorder(History(seed=1))
    shared = Shared()
    client = Client(
        0,
        1,
        api=api,  # type: ignore[arg-type]  # a fake with Api's one method
        accounts=Accounts({"USD": ["a"]}),
        recorder=recorder,
        watcher=Watcher(None, recorder, shared, asyncio.Event()),  # type: ignore[arg-type]  # never watches: nothing is OK
        shared=shared,
        http_share=0.0,
    )
    call = await client._send(Request(op="deposit", key="k-1", account_id="a"))
    assert call.outcome == "FAILED_PRECONDITION"
    assert [r.key for r in api.sent] == ["k-1"] * 3
    assert len(recorder.history.calls) == 3

"""The HTTP facade of seeds 000/001 on the adapter process, over the real payment service."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.conftest import Suite
from tests.integration.helpers import clients, open_account
from tests.tokens import make_token
from webhook_adapter.facade import OPENAPI

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(loop_scope="session")
async def http(suite: Suite) -> AsyncIterator[aiohttp.ClientSession]:
    from webhook_adapter.app import start

    runner, port = await start(suite.settings, "127.0.0.1:0")
    # Calls as a service: what a token allows is test_access_control's subject.
    headers = {"Authorization": f"Bearer {make_token()}"}
    async with aiohttp.ClientSession(
        base_url=f"http://127.0.0.1:{port}", headers=headers
    ) as session:
        yield session
    await runner.cleanup()


@pytest_asyncio.fixture(loop_scope="session")
async def account(suite: Suite) -> str:
    async with clients(suite) as c:
        return await open_account(c)


async def call(
    http: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
) -> tuple[int, Any]:
    async with http.request(method, path, **kwargs) as response:
        return response.status, await response.json()


async def post(
    http: aiohttp.ClientSession, path: str, body: Any, headers: dict[str, str]
) -> tuple[int, Any]:
    return await call(http, "POST", path, json=body, headers=headers)


def key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


async def test_a_deposit_is_accepted_and_completes(
    http: aiohttp.ClientSession, account: str
) -> None:
    body = {"amount_minor": 1250, "currency": "USD", "payment_method": "pm_card_ok"}

    status, created = await call(
        http, "POST", f"/account/{account}/deposit", json=body, headers=key()
    )

    assert status == 202
    assert created["status"] in ("initiated", "pending")
    assert (created["amount_minor"], created["currency"], created["kind"]) == (
        1250,
        "USD",
        "deposit",
    )
    path = f"/transaction/{created['transaction_id']}/status"
    async with asyncio.timeout(15):
        while True:
            status, found = await call(http, "GET", path)
            if found["status"] == "completed":
                break
            await asyncio.sleep(0.1)
    assert status == 200


async def test_the_same_key_with_another_amount_is_409(
    http: aiohttp.ClientSession, account: str
) -> None:
    headers = key()
    body = {"amount_minor": 100, "currency": "USD"}
    assert (await call(http, "POST", f"/account/{account}/deposit", json=body, headers=headers))[
        0
    ] == 202

    status, error = await call(
        http,
        "POST",
        f"/account/{account}/deposit",
        json={**body, "amount_minor": 101},
        headers=headers,
    )

    assert status == 409
    assert set(error) == {"error"}


@pytest.mark.parametrize(
    ("body", "headers", "field"),
    [
        ({"amount_minor": 100, "currency": "USD"}, {}, "Idempotency-Key"),
        ({"amount_minor": "100", "currency": "USD"}, key(), "amount_minor"),
        ({"amount_minor": 0, "currency": "USD"}, key(), "amount_minor"),
        ({"amount_minor": 1.5, "currency": "USD"}, key(), "amount_minor"),
        ({"amount_minor": 100, "currency": "usd"}, key(), "currency"),
        ({"amount_minor": 100, "currency": "USD", "extra": 1}, key(), "extra"),
        ({"currency": "USD"}, key(), "amount_minor"),
    ],
)
async def test_bad_deposits_are_400_with_the_field(
    http: aiohttp.ClientSession, account: str, body: Any, headers: dict[str, str], field: str
) -> None:
    status, error = await call(
        http, "POST", f"/account/{account}/deposit", json=body, headers=headers
    )

    assert status == 400
    assert error["error"]["field"] == field


async def test_an_unknown_account_and_transaction_are_404_or_400(
    http: aiohttp.ClientSession,
) -> None:
    body = {"amount_minor": 100, "currency": "USD"}
    status, _ = await call(
        http, "POST", f"/account/{uuid.uuid4()}/deposit", json=body, headers=key()
    )
    assert status == 404
    assert (await call(http, "GET", f"/transaction/{uuid.uuid4()}/status"))[0] == 404
    assert (await call(http, "GET", "/transaction/not-an-id/status"))[0] == 400


@pytest.mark.parametrize(
    ("path", "body", "expected", "reason"),
    [
        # A new account holds nothing: the hold is refused on the request path.
        (
            "withdraw",
            {"amount_minor": 100, "currency": "USD", "destination": "acct_ext"},
            422,
            "INSUFFICIENT_FUNDS",
        ),
        (
            "transfer",
            {"amount_minor": 100, "currency": "USD", "to_account_id": str(uuid.uuid4())},
            404,
            "NOT_FOUND",
        ),
    ],
)
async def test_withdraw_and_transfer_answer_with_the_payment_service_s_refusals(
    http: aiohttp.ClientSession,
    account: str,
    path: str,
    body: dict[str, Any],
    expected: int,
    reason: str,
) -> None:
    status, answer = await call(
        http, "POST", f"/account/{account}/{path}", json=body, headers=key()
    )

    assert status == expected
    assert answer["error"]["reason"] == reason


async def test_openapi_is_served(http: aiohttp.ClientSession) -> None:
    status, document = await call(http, "GET", "/openapi.json")

    assert status == 200
    assert document == json.loads(json.dumps(OPENAPI))
    assert set(document["paths"]) == {
        "/account/{id}/deposit",
        "/account/{id}/withdraw",
        "/account/{id}/transfer",
        "/transaction/{id}/status",
    }


def _random_value(rng: random.Random) -> Any:
    return rng.choice(
        [
            rng.randint(-(2**70), 2**70),
            rng.random(),
            "".join(rng.choice("aZ9 _-{}\"'\\é\x00") for _ in range(rng.randint(0, 20))),
            None,
            True,
            [],
            {"nested": rng.randint(0, 3)},
            "USD",
            str(uuid.uuid4()),
            rng.randint(1, 10_000),
        ]
    )


def _random_body(rng: random.Random, schema: dict[str, Any]) -> bytes:
    fields = [*schema["properties"], "unexpected"]
    body = {f: _random_value(rng) for f in fields if rng.random() < 0.7}
    if rng.random() < 0.1:
        return rng.choice([b"", b"not json", b"[1,2]", b"\xff\xfe", b"{" * 50])
    return json.dumps(body).encode()


async def test_random_requests_from_the_openapi_document_never_get_a_500(
    http: aiohttp.ClientSession, account: str
) -> None:
    """A seeded property-based run in the spirit of schemathesis: requests generated from the
    document's own paths and schemas, valid and not, must get a documented answer, never 500."""
    rng = random.Random(7)
    ids = [account, str(uuid.uuid4()), "x", "%20", "a" * 300]
    for _ in range(150):
        template = rng.choice(list(OPENAPI["paths"]))
        [(method, operation)] = OPENAPI["paths"][template].items()
        path = template.replace("{id}", rng.choice(ids))
        kwargs: dict[str, Any] = {}
        if method == "post":
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            kwargs["data"] = _random_body(rng, schema)
            if rng.random() < 0.8:
                kwargs["headers"] = {"Idempotency-Key": rng.choice([uuid.uuid4().hex, "k", "é"])}
        async with http.request(method.upper(), path, **kwargs) as response:
            status = response.status
            body = await response.json()
        documented = {int(s) for s in operation["responses"]}
        assert status != 500, (method, path, kwargs, body)
        assert status in documented | {405, 413}, (method, path, kwargs, status, body)

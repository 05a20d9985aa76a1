"""SimulatorProvider against tiny scripted HTTP servers on port 0, and once against the real
provider simulator, so a drift in its request schema shows up here."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from common.ids import new_id
from gateway_service.adapters.provider import SimulatorProvider, provider_session
from gateway_service.domain.provider import (
    ChargeInstruction,
    ProviderAcceptance,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)
from provider_simulator.app import start as start_simulator
from provider_simulator.settings import SimulatorSettings
from tests.gateway_service.conftest import EUR_12_50, PAYMENT_METHOD, provider_event_body

TIMEOUT_MS = 300
Reply = Callable[[], Awaitable[web.Response]]


def reply(status: int, body: Any = None, *, delay_s: float = 0.0) -> Reply:
    async def answer() -> web.Response:
        await asyncio.sleep(delay_s)
        if body is None:
            return web.Response(status=status)
        return web.json_response(body, status=status)

    return answer


@dataclass
class ScriptedProvider:
    """Answers POST /v1/charges with `replies` in order; the last one repeats."""

    url: str = ""
    replies: list[Reply] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(await request.json())
        answer = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        return await answer()


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedProvider]:
    server = ScriptedProvider()
    app = web.Application()
    app.router.add_post("/v1/charges", server.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    server.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield server
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with provider_session(TIMEOUT_MS) as session:
        yield session


def adapter(session: aiohttp.ClientSession, url: str) -> SimulatorProvider:
    return SimulatorProvider(session, base_url=url, initial_backoff_s=0.01, max_backoff_s=0.02)


def instruction(operation_id: str = "op-1") -> ChargeInstruction:
    return ChargeInstruction(
        idempotency_key="pay-1:charge",
        amount=EUR_12_50,
        payment_method=PAYMENT_METHOD,
        reference=operation_id,
    )


async def test_an_accepted_charge_yields_the_providers_charge_id(
    scripted: ScriptedProvider, session: aiohttp.ClientSession
) -> None:
    scripted.replies = [reply(202, {"id": "ch_1", "status": "pending"})]

    acceptance = await adapter(session, scripted.url).create_charge(instruction())

    assert acceptance == ProviderAcceptance(provider_reference="ch_1")
    assert scripted.requests == [
        {
            "idempotency_key": "pay-1:charge",
            "amount_minor": 1250,
            "currency": "EUR",
            "payment_method": PAYMENT_METHOD,
            "reference": "op-1",
        }
    ]


INVALID = {"error": {"code": "invalid_field", "message": "bad", "field": "x"}}
REUSED = {"error": {"code": "idempotency_key_reused", "message": "no"}}


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (400, INVALID, "invalid_field"),
        (409, REUSED, "idempotency_key_reused"),
        (422, None, "http_422"),
    ],
)
async def test_a_refusal_is_a_rejection_with_the_providers_code(
    scripted: ScriptedProvider,
    session: aiohttp.ClientSession,
    status: int,
    body: Any,
    code: str,
) -> None:
    scripted.replies = [reply(status, body)]

    with pytest.raises(ProviderRejected) as caught:
        await adapter(session, scripted.url).create_charge(instruction())

    assert caught.value.code == code
    assert len(scripted.requests) == 1


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_transient_failures_are_retried(
    scripted: ScriptedProvider, session: aiohttp.ClientSession, status: int
) -> None:
    scripted.replies = [reply(status), reply(status), reply(202, {"id": "ch_1"})]

    acceptance = await adapter(session, scripted.url).create_charge(instruction())

    assert acceptance.provider_reference == "ch_1"
    assert len(scripted.requests) == 3


async def test_a_provider_failing_every_attempt_is_unavailable(
    scripted: ScriptedProvider, session: aiohttp.ClientSession
) -> None:
    scripted.replies = [reply(502)]

    with pytest.raises(ProviderUnavailable):
        await adapter(session, scripted.url).create_charge(instruction())

    assert len(scripted.requests) == 3


async def test_a_slow_provider_times_out_without_a_retry(
    scripted: ScriptedProvider, session: aiohttp.ClientSession
) -> None:
    scripted.replies = [reply(202, {"id": "ch_1"}, delay_s=TIMEOUT_MS / 1000 * 3)]

    with pytest.raises(ProviderTimeout):
        await adapter(session, scripted.url).create_charge(instruction())

    assert len(scripted.requests) == 1


async def test_an_acceptance_without_a_charge_id_is_no_acceptance(
    scripted: ScriptedProvider, session: aiohttp.ClientSession
) -> None:
    scripted.replies = [reply(202, {"status": "pending"})]

    with pytest.raises(ProviderUnavailable):
        await adapter(session, scripted.url).create_charge(instruction())


async def test_an_unreachable_provider_is_unavailable(session: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(ProviderUnavailable):
        await adapter(session, f"http://127.0.0.1:{port}").create_charge(instruction())


async def test_the_operation_id_is_read_from_the_simulators_event(
    session: aiohttp.ClientSession,
) -> None:
    operation_id = new_id()
    body = provider_event_body("ch_1", operation_id, "charge.succeeded")

    assert adapter(session, "http://unused").operation_id_in_event(body) == operation_id


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"data": null}',
        b'{"data": {"reference": 7}}',
        b'{"data": {"reference": "pay-1"}}',
    ],
)
async def test_an_event_without_our_operation_id_yields_none(
    session: aiohttp.ClientSession, body: bytes
) -> None:
    assert adapter(session, "http://unused").operation_id_in_event(body) is None


async def test_the_real_simulator_accepts_our_charges_and_dedups_on_our_key(
    session: aiohttp.ClientSession,
) -> None:
    settings = SimulatorSettings(
        listen_host="127.0.0.1",
        listen_port=0,
        # Never settles within the test, so it never tries to call a webhook back.
        settle_delay_ms=600_000,
        webhook_url="http://127.0.0.1:9/webhooks/simulator",
    )
    runner, port = await start_simulator(settings)
    try:
        provider = adapter(session, f"http://127.0.0.1:{port}")
        operation_id = new_id()
        first = await provider.create_charge(instruction(operation_id))
        again = await provider.create_charge(instruction(operation_id))
    finally:
        await runner.cleanup()

    assert first.provider_reference.startswith("ch_")
    assert again == first

"""SimulatorProvider against a tiny scripted HTTP server on port 0 (the classification of every
answer), and against the real provider simulator, so a drift in its API shows up here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from common.ids import new_id
from common.money import Money
from common.ports import free_port
from gateway_service.adapters.provider import SimulatorProvider, provider_session
from gateway_service.domain.provider import (
    Instruction,
    InstructionKind,
    ProviderNotProcessed,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    ReportedStatus,
)
from provider_simulator.app import start as start_simulator
from provider_simulator.settings import SimulatorSettings
from tests.gateway_service.conftest import EUR_12_50, PAYMENT_METHOD

TIMEOUT_S = 0.3


def instruction(kind: InstructionKind = InstructionKind.CHARGE, **changes: Any) -> Instruction:
    fields: dict[str, Any] = {
        "kind": kind,
        "idempotency_key": f"pay-{new_id()}:{kind.value}",
        "amount": EUR_12_50,
        "instrument": PAYMENT_METHOD,
        "reference": new_id(),
        **changes,
    }
    return Instruction(**fields)


@dataclass
class Scripted:
    url: str = ""
    status: int = 202
    body: Any = field(default_factory=lambda: {"id": "ch_1"})
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    requests: list[tuple[dict[str, str], Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.json()))
        await asyncio.sleep(self.delay_s)
        return web.json_response(self.body, status=self.status, headers=self.headers)


@pytest.fixture
async def scripted() -> AsyncIterator[Scripted]:
    server = Scripted()
    app = web.Application()
    app.router.add_post("/v1/{kind}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    server.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield server
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with provider_session() as session:
        yield session


def provider(session: aiohttp.ClientSession, url: str) -> SimulatorProvider:
    return SimulatorProvider(session, name="sim-primary", base_url=url)


async def test_a_charge_sends_the_idempotency_key_header_and_our_reference(
    scripted: Scripted, session: aiohttp.ClientSession
) -> None:
    sent = instruction()

    acceptance = await provider(session, scripted.url).charge(sent, timeout_s=TIMEOUT_S)

    assert acceptance.provider_reference == "ch_1"
    [(headers, body)] = scripted.requests
    assert headers["Idempotency-Key"] == sent.idempotency_key
    assert body == {
        "amount_minor": 1250,
        "currency": "EUR",
        "payment_method": PAYMENT_METHOD,
        "reference": sent.reference,
    }


@pytest.mark.parametrize(
    ("status", "headers", "error"),
    [
        (402, {}, ProviderRejected),
        (409, {}, ProviderRejected),
        (429, {}, ProviderNotProcessed),
        (503, {"Provider-Processed": "false"}, ProviderNotProcessed),
        (503, {}, ProviderUnavailable),
        (500, {}, ProviderUnavailable),
    ],
)
async def test_answers_are_classified_by_whether_money_can_have_moved(
    scripted: Scripted,
    session: aiohttp.ClientSession,
    status: int,
    headers: dict[str, str],
    error: type[Exception],
) -> None:
    scripted.status, scripted.headers = status, headers
    scripted.body = {"error": {"code": "card_declined", "message": "no"}}

    with pytest.raises(error) as caught:
        await provider(session, scripted.url).charge(instruction(), timeout_s=TIMEOUT_S)

    assert type(caught.value) is error
    if error is ProviderRejected:
        assert caught.value.code == "card_declined"  # type: ignore[attr-defined]  # `error` is a parameter: mypy sees Exception


async def test_no_answer_in_time_is_a_timeout(
    scripted: Scripted, session: aiohttp.ClientSession
) -> None:
    scripted.delay_s = 2 * TIMEOUT_S

    with pytest.raises(ProviderTimeout):
        await provider(session, scripted.url).charge(instruction(), timeout_s=TIMEOUT_S)


async def test_a_refused_connection_is_not_processed(session: aiohttp.ClientSession) -> None:
    port = free_port()  # nothing listens there

    with pytest.raises(ProviderNotProcessed):
        await provider(session, f"http://127.0.0.1:{port}").charge(
            instruction(), timeout_s=TIMEOUT_S
        )


# -- against the real simulator ----------------------------------------------------------


@pytest.fixture
async def simulator() -> AsyncIterator[str]:
    settings = SimulatorSettings(
        listen_port=0,
        webhook_url="http://127.0.0.1:9/webhooks/sim-primary",
        settle_delay_ms=50,
        webhook_max_attempts=1,
        data_dir=None,
    )
    runner, port = await start_simulator(settings)
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_charge_status_and_refund_against_the_simulator(
    simulator: str, session: aiohttp.ClientSession
) -> None:
    sim = provider(session, simulator)
    sent = instruction()

    accepted = await sim.charge(sent, timeout_s=1.0)
    replayed = await sim.charge(sent, timeout_s=1.0)
    by_key = await sim.get_status(
        InstructionKind.CHARGE,
        idempotency_key=sent.idempotency_key,
        provider_reference="",
        timeout_s=1.0,
    )

    assert replayed == accepted
    assert (by_key.status, by_key.provider_reference, by_key.amount) == (
        ReportedStatus.PENDING,
        accepted.provider_reference,
        EUR_12_50,
    )
    for _ in range(50):
        report = await sim.get_status(
            InstructionKind.CHARGE,
            idempotency_key="",
            provider_reference=accepted.provider_reference,
            timeout_s=1.0,
        )
        if report.status is ReportedStatus.SUCCEEDED:
            break
        await asyncio.sleep(0.02)
    assert report.status is ReportedStatus.SUCCEEDED

    refund = instruction(
        InstructionKind.REFUND, instrument=accepted.provider_reference, amount=Money(250, "EUR")
    )
    assert (await sim.refund(refund, timeout_s=1.0)).provider_reference.startswith("re_")
    too_much = instruction(
        InstructionKind.REFUND, instrument=accepted.provider_reference, amount=EUR_12_50
    )
    with pytest.raises(ProviderRejected) as caught:
        await sim.refund(too_much, timeout_s=1.0)
    assert caught.value.code == "amount_too_large"


async def test_an_operation_the_simulator_never_saw_is_not_found(
    simulator: str, session: aiohttp.ClientSession
) -> None:
    report = await provider(session, simulator).get_status(
        InstructionKind.PAYOUT, idempotency_key="never-sent", provider_reference="", timeout_s=1.0
    )

    assert report.status is ReportedStatus.NOT_FOUND


async def test_a_payout_against_the_simulator(
    simulator: str, session: aiohttp.ClientSession
) -> None:
    sent = instruction(InstructionKind.PAYOUT, instrument="acct_123")

    accepted = await provider(session, simulator).payout(sent, timeout_s=1.0)

    assert accepted.provider_reference.startswith("po_")

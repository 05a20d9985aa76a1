from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from provider_simulator.app import start
from provider_simulator.engine import TASK_NAME_PREFIX
from provider_simulator.settings import SimulatorSettings
from tests.provider_simulator.conftest import TEST_SECRET, Receiver, Sim, StartSim


async def test_healthz(sim: Sim) -> None:
    assert await sim.call("GET", "/healthz") == (200, {"status": "ok"})


async def test_create_charge_is_accepted_processing(start_sim: StartSim) -> None:
    # A long settle delay keeps the charge pending for the whole test.
    sim = await start_sim(settle_delay_ms=60_000)

    status, charge = await sim.charge()

    assert status == 202
    assert charge["id"].startswith("ch_")
    assert charge == {
        "id": charge["id"],
        "object": "charge",
        "status": "processing",
        "amount_minor": 1250,
        "currency": "EUR",
        "reference": "pay_123",
        "idempotency_key": "idem-1",
        "failure_reason": None,
        "created": charge["created"],
    }
    assert abs(charge["created"] - time.time()) < 5
    assert await sim.call("GET", f"/v1/charges/{charge['id']}") == (200, charge)


async def test_replay_with_same_body_returns_the_same_charge(start_sim: StartSim) -> None:
    sim = await start_sim(settle_delay_ms=60_000)
    _, first = await sim.charge()

    status, again = await sim.charge()

    assert (status, again) == (200, first)


@pytest.mark.parametrize(
    "change",
    [
        {"amount_minor": 1251},
        {"currency": "USD"},
        {"payment_method": "pm_card_declined"},
        {"reference": "pay_other"},
    ],
)
async def test_reusing_a_key_with_different_parameters_conflicts(
    sim: Sim, change: dict[str, Any]
) -> None:
    await sim.charge()

    status, body = await sim.charge(**change)

    assert status == 409
    assert body["error"]["code"] == "idempotency_key_reused"
    assert body["error"]["field"] == "idempotency_key"


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"amount_minor": 0}, "amount_minor", "invalid_field"),
        ({"amount_minor": -5}, "amount_minor", "invalid_field"),
        ({"amount_minor": "1250"}, "amount_minor", "invalid_field"),
        ({"amount_minor": 12.5}, "amount_minor", "invalid_field"),
        ({"amount_minor": True}, "amount_minor", "invalid_field"),
        ({"amount_minor": 2**63}, "amount_minor", "invalid_field"),
        ({"currency": "eur"}, "currency", "invalid_field"),
        ({"currency": "EURO"}, "currency", "invalid_field"),
        ({"idempotency_key": ""}, "idempotency_key", "invalid_field"),
        ({"payment_method": None}, "payment_method", "invalid_field"),
        ({"reference": None}, "reference", "invalid_field"),
        ({"descripton": "typo"}, "descripton", "invalid_field"),
    ],
)
async def test_invalid_charge_is_rejected_naming_the_field(
    sim: Sim, change: dict[str, Any], field: str, code: str
) -> None:
    status, body = await sim.charge(**change)

    assert status == 400
    assert body["error"]["field"] == field
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert await sim.events() == []


async def test_missing_field_is_named(sim: Sim) -> None:
    status, body = await sim.call("POST", "/v1/charges", json={"idempotency_key": "k"})

    assert status == 400
    assert body["error"]["code"] == "missing_field"
    assert body["error"]["field"] == "amount_minor"


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe\x00"])
async def test_body_that_is_not_a_json_object_is_rejected(sim: Sim, raw: bytes) -> None:
    status, body = await sim.call(
        "POST", "/v1/charges", data=raw, headers={"content-type": "application/json"}
    )

    assert status == 400
    assert body["error"]["code"] == "invalid_json"


async def test_unknown_charge_is_404(sim: Sim) -> None:
    status, body = await sim.call("GET", "/v1/charges/ch_missing")

    assert status == 404
    assert body["error"]["code"] == "charge_not_found"


async def test_unknown_route_and_wrong_method_answer_json(sim: Sim) -> None:
    assert (await sim.call("GET", "/nope"))[1]["error"]["code"] == "not_found"
    status, body = await sim.call("DELETE", "/v1/charges")
    assert status == 405
    assert body["error"]["code"] == "method_not_allowed"


async def test_redeliver_unknown_event_is_404(sim: Sim) -> None:
    status, body = await sim.call("POST", "/_sim/events/evt_missing/redeliver")

    assert status == 404
    assert body["error"]["code"] == "event_not_found"


def _simulator_tasks(charge_id: str) -> list[asyncio.Task[Any]]:
    """This charge's background work only: other simulators of the test session (the shared
    suite's) may be settling or delivering at the same time."""
    return [
        t
        for t in asyncio.all_tasks()
        if t.get_name().startswith(TASK_NAME_PREFIX) and charge_id in t.get_name()
    ]


@pytest.mark.parametrize(
    ("settle_delay_ms", "receiver_statuses"),
    [
        pytest.param(60_000, [], id="settlement-pending"),
        pytest.param(0, [503] * 10, id="delivery-backing-off"),
    ],
)
async def test_shutdown_cancels_background_work(
    receiver: Receiver, settle_delay_ms: int, receiver_statuses: list[int]
) -> None:
    receiver.statuses = receiver_statuses
    settings = SimulatorSettings(
        listen_port=0,
        webhook_url=receiver.url,
        settle_delay_ms=settle_delay_ms,
        webhook_secret=SecretStr(TEST_SECRET),
        data_dir=None,
    )
    runner, port = await start(settings)
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as client:
        sim = Sim(client)
        status, charge = await sim.charge()
        assert status == 202
        if receiver_statuses:
            await receiver.next()
    assert _simulator_tasks(charge["id"])

    await runner.cleanup()

    assert _simulator_tasks(charge["id"]) == []

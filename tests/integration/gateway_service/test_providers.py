"""The gateway against real simulator servers that fail like real providers."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest
import pytest_asyncio
from sqlalchemy import text
from standardwebhooks.webhooks import Webhook

from common import db
from paysuite.gateway.v1 import gateway_pb2
from tests.conftest import PRIMARY_SECRET
from tests.integration.gateway_service.conftest import Rig

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

PENDING = gateway_pb2.OPERATION_STATUS_PENDING
SUCCEEDED = gateway_pb2.OPERATION_STATUS_SUCCEEDED
FAILED = gateway_pb2.OPERATION_STATUS_FAILED
CREATED = gateway_pb2.OPERATION_STATUS_CREATED


def key(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}:charge"


@pytest_asyncio.fixture(loop_scope="session", autouse=True)
async def well_behaved(rig: Rig) -> AsyncIterator[None]:
    await rig.sims.reset()
    yield
    await rig.sims.reset()


def terminal(operation: gateway_pb2.Operation) -> bool:
    return operation.status in (SUCCEEDED, FAILED)


async def test_a_declined_charge_fails_with_the_providers_reason(rig: Rig) -> None:
    await rig.sims.configure("sim-primary", decline_rate=1.0)

    charged = await rig.charge(key("decline"))
    settled = await rig.wait_for(charged.operation_id, terminal)

    assert (settled.status, settled.failure_reason) == (FAILED, "card_declined")


async def test_an_outage_sends_new_charges_to_the_secondary_and_none_to_both(rig: Rig) -> None:
    await rig.sims.configure("sim-primary", outage=True)
    keys = [key("outage") for _ in range(3)]

    charged = [await rig.charge(k) for k in keys]

    assert {c.provider for c in charged} == {"sim-secondary"}
    settled = [await rig.wait_for(c.operation_id, terminal) for c in charged]
    assert {s.status for s in settled} == {SUCCEEDED}
    assert not set(keys) & await rig.sims.keys("sim-primary")
    assert set(keys) <= await rig.sims.keys("sim-secondary")
    history = [(h.status, h.provider) for h in settled[0].history]
    assert history[:2] == [(CREATED, "sim-primary"), (CREATED, "sim-secondary")]


async def test_a_burst_of_5xx_opens_the_breaker_and_half_open_trials_close_it(rig: Rig) -> None:
    await rig.sims.configure("sim-primary", error_rate=1.0)

    burst = [await rig.charge(key("burst")) for _ in range(4)]

    assert {c.provider for c in burst} == {"sim-secondary"}
    status = await rig.breakers()
    assert status["sim-primary"].breaker_state == "open"
    assert status["sim-primary"].rejected_calls >= 1
    assert status["sim-secondary"].breaker_state == "closed"

    await rig.sims.configure("sim-primary", error_rate=0)
    await asyncio.sleep(1.1)  # the breaker's reset timeout passes in real time
    trials = [await rig.charge(key("trial")) for _ in range(2)]

    assert {c.provider for c in trials} == {"sim-primary"}
    assert (await rig.breakers())["sim-primary"].breaker_state == "closed"
    assert not {c.idempotency_key for c in burst} & await rig.sims.keys("sim-primary")


async def test_a_timeout_is_an_unknown_outcome_that_sync_resolves(rig: Rig) -> None:
    await rig.sims.configure("sim-primary", timeout_rate=1.0, settle_delay_ms=60_000)
    charge_key = key("timeout")

    charged = await rig.charge(charge_key)

    assert (charged.status, charged.outcome_unknown, charged.provider) == (
        CREATED,
        True,
        "sim-primary",
    )
    # The provider took it although it never answered; nobody else was asked.
    assert charge_key in await rig.sims.keys("sim-primary")
    assert charge_key not in await rig.sims.keys("sim-secondary")
    await rig.sims.configure("sim-primary", timeout_rate=0)

    synced = await rig.gateway.SyncOperation(
        gateway_pb2.SyncOperationRequest(operation_id=charged.operation_id)
    )

    assert synced.status == PENDING
    assert synced.provider_reference.startswith("ch_")
    again = await rig.charge(charge_key)
    assert (again.operation_id, again.status) == (charged.operation_id, PENDING)


async def test_duplicated_delayed_and_reordered_webhooks_apply_once_and_never_regress(
    rig: Rig,
) -> None:
    await rig.sims.configure(
        "sim-primary",
        webhook_duplicate_rate=1.0,
        webhook_reorder_rate=1.0,
        webhook_delay_rate=0.5,
        webhook_delay_ms=200,
    )

    charged = [await rig.charge(key("chaos")) for _ in range(4)]
    settled = [await rig.wait_for(c.operation_id, terminal) for c in charged]

    assert {s.status for s in settled} == {SUCCEEDED}
    for operation in settled:
        statuses = [h.status for h in operation.history]
        # created -> pending -> succeeded at most once each, in that order, never back.
        assert statuses == sorted(statuses)
        assert statuses.count(SUCCEEDED) == 1


async def test_a_signed_webhook_with_the_wrong_amount_moves_no_money(rig: Rig) -> None:
    await rig.sims.configure("sim-primary", settle_delay_ms=60_000)
    charged = await rig.charge(key("mismatch"), amount_minor=200)
    body, headers = _signed_webhook(
        {
            "id": f"evt_forged_{uuid.uuid4().hex[:6]}",
            "type": "charge.succeeded",
            "created": int(time.time()),
            "data": {
                "id": charged.provider_reference,
                "reference": charged.operation_id,
                "amount_minor": 1,
                "currency": "EUR",
            },
        }
    )

    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{rig.webhook_base}/webhooks/sim-primary", data=body, headers=headers) as r,
    ):
        assert r.status == 200

    operation = await rig.operation(charged.operation_id)
    assert operation.status == PENDING


def _signed_webhook(event: dict[str, object]) -> tuple[str, dict[str, str]]:
    body = json.dumps(event)
    msg_id = str(event["id"])
    now = int(time.time())
    signature = Webhook(PRIMARY_SECRET).sign(msg_id, datetime.fromtimestamp(now, UTC), body)
    return body, {
        "webhook-id": msg_id,
        "webhook-timestamp": str(now),
        "webhook-signature": signature,
    }


async def test_concurrent_deliveries_of_one_webhook_are_recorded_once(rig: Rig) -> None:
    await rig.sims.configure("sim-primary", settle_delay_ms=60_000)
    charged = await rig.charge(key("concurrent"))
    body, headers = _signed_webhook(
        {
            "id": f"evt_concurrent_{uuid.uuid4().hex[:6]}",
            "type": "charge.succeeded",
            "created": int(time.time()),
            "data": {
                "id": charged.provider_reference,
                "reference": charged.operation_id,
                "amount_minor": 1250,
                "currency": "EUR",
            },
        }
    )
    url = f"{rig.webhook_base}/webhooks/sim-primary"

    async with aiohttp.ClientSession() as http:

        async def deliver() -> bool:
            async with http.post(url, data=body, headers=headers) as response:
                assert response.status == 200
                answer = await response.json()
                return bool(answer["duplicate"])

        duplicates = await asyncio.gather(*(deliver() for _ in range(12)))

    assert duplicates.count(False) == 1
    operation = await rig.operation(charged.operation_id)
    assert operation.status == SUCCEEDED
    assert [h.status for h in operation.history].count(SUCCEEDED) == 1


async def test_an_unverifiable_webhook_syncs_its_operation_and_is_recorded_rejected(
    rig: Rig,
) -> None:
    from gateway_service.bootstrap import DATABASE

    charged = await rig.charge(key("forged"))
    body = json.dumps(
        {
            "id": "evt_forged_sig",
            "type": "charge.failed",
            "created": int(time.time()),
            "data": {"id": charged.provider_reference, "reference": charged.operation_id},
        }
    )
    headers = {
        "webhook-id": "evt_forged_sig",
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": "v1,Zm9yZ2Vk",
    }

    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{rig.webhook_base}/webhooks/sim-primary", data=body, headers=headers) as r,
    ):
        assert r.status == 401

    engine = db.create_engine(DATABASE.url(rig.settings), pool_size=1)
    try:
        async with asyncio.timeout(5):
            while True:
                async with engine.connect() as conn:
                    rejected = (
                        await conn.execute(
                            text(
                                "SELECT count(*) FROM outbox WHERE event_type = 'webhook.rejected'"
                                " AND aggregate_id = :id"
                            ),
                            {"id": f"sim-primary:{charged.operation_id}"},
                        )
                    ).scalar_one()
                if rejected:
                    break
                await asyncio.sleep(0.05)
    finally:
        await engine.dispose()
    # Never applied: the forged "failed" did not fail the charge.
    assert (await rig.operation(charged.operation_id)).status != FAILED

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import stripe
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.provider_simulator.conftest import TEST_SECRET, ReceivedWebhook, Receiver, Sim, StartSim


def verified(webhook: ReceivedWebhook) -> Any:
    assert webhook.headers["Content-Type"] == "application/json"
    payload = Webhook(TEST_SECRET).verify(webhook.body, webhook.headers)
    assert webhook.headers["webhook-id"] == payload["id"]
    return payload


async def test_successful_charge_sends_a_signed_succeeded_webhook(
    sim: Sim, receiver: Receiver
) -> None:
    _, charge = await sim.charge()

    payload = verified(await receiver.next())

    assert payload["id"].startswith("evt_")
    assert payload["type"] == "charge.succeeded"
    assert isinstance(payload["created"], int)
    assert payload["data"] == {
        **charge,
        "charge_id": charge["id"],
        "status": "succeeded",
    }
    _, settled = await sim.call("GET", f"/v1/charges/{charge['id']}")
    assert settled["status"] == "succeeded"
    event = await sim.wait_for_event(payload["id"], lambda e: e["state"] == "delivered")
    assert event["attempts"] == 1
    assert event["last_status"] == 204
    assert event["charge_id"] == charge["id"]


@pytest.mark.parametrize(
    ("payment_method", "reason"),
    [("pm_card_declined", "card_declined"), ("pm_card_insufficient_funds", "insufficient_funds")],
)
async def test_declined_charge_sends_a_signed_failed_webhook(
    sim: Sim, receiver: Receiver, payment_method: str, reason: str
) -> None:
    _, charge = await sim.charge(payment_method=payment_method)

    payload = verified(await receiver.next())

    assert payload["type"] == "charge.failed"
    assert payload["data"]["charge_id"] == charge["id"]
    assert payload["data"]["status"] == "failed"
    assert payload["data"]["failure_reason"] == reason
    _, settled = await sim.call("GET", f"/v1/charges/{charge['id']}")
    assert (settled["status"], settled["failure_reason"]) == ("failed", reason)


async def test_signature_does_not_verify_with_another_secret(sim: Sim, receiver: Receiver) -> None:
    await sim.charge()
    webhook = await receiver.next()

    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "b3RoZXItc2VjcmV0").verify(webhook.body, webhook.headers)


async def test_settlement_waits_for_the_configured_delay(
    start_sim: StartSim, receiver: Receiver
) -> None:
    sim = await start_sim(settle_delay_ms=150)
    _, charge = await sim.charge()

    _, still = await sim.call("GET", f"/v1/charges/{charge['id']}")
    assert still["status"] == "processing"
    verified(await receiver.next())


@pytest.mark.parametrize("transient", [503, 500, 429, 408])
async def test_transient_failure_is_retried_with_the_same_event(
    sim: Sim, receiver: Receiver, transient: int
) -> None:
    receiver.statuses = [transient]
    await sim.charge()

    first = verified(await receiver.next())
    second = verified(await receiver.next())

    assert first == second
    event = await sim.wait_for_event(first["id"], lambda e: e["state"] == "delivered")
    assert (event["attempts"], event["last_status"]) == (2, 204)


async def test_client_error_is_final(sim: Sim, receiver: Receiver) -> None:
    receiver.statuses = [400]
    await sim.charge()

    payload = verified(await receiver.next())

    event = await sim.wait_for_event(payload["id"], lambda e: e["state"] != "pending")
    assert (event["state"], event["attempts"], event["last_status"]) == ("failed", 1, 400)
    assert receiver.received.empty()


async def test_delivery_gives_up_after_max_attempts(
    start_sim: StartSim, receiver: Receiver
) -> None:
    sim = await start_sim(webhook_max_attempts=2)
    receiver.statuses = [503, 503, 503]
    await sim.charge()

    payload = verified(await receiver.next())
    verified(await receiver.next())

    event = await sim.wait_for_event(payload["id"], lambda e: e["state"] != "pending")
    assert (event["state"], event["attempts"], event["last_status"]) == ("failed", 2, 503)
    assert receiver.received.empty()


async def test_unreachable_receiver_is_retried_then_abandoned(start_sim: StartSim) -> None:
    # Nothing listens on the discard port locally, so every attempt is a connection error.
    sim = await start_sim(webhook_url="http://127.0.0.1:9/hook", webhook_max_attempts=2)
    _, charge = await sim.charge()

    for _ in range(150):
        events = await sim.events()
        if events and events[0]["state"] != "pending":
            break
        await asyncio.sleep(0.02)
    assert [(e["charge_id"], e["state"], e["attempts"], e["last_status"]) for e in events] == [
        (charge["id"], "failed", 2, None)
    ]


async def test_redeliver_sends_the_same_event_again(sim: Sim, receiver: Receiver) -> None:
    await sim.charge()
    original = await receiver.next()
    event_id = verified(original)["id"]
    await sim.wait_for_event(event_id, lambda e: e["state"] == "delivered")

    status, body = await sim.call("POST", f"/_sim/events/{event_id}/redeliver")

    assert status == 202
    assert body["id"] == event_id
    again = await receiver.next()
    assert verified(again)["id"] == event_id
    assert again.body == original.body
    event = await sim.wait_for_event(event_id, lambda e: e["attempts"] == 2)
    assert event["state"] == "delivered"
    assert json.loads(again.body)["type"] == "charge.succeeded"


async def test_a_stripe_format_instance_signs_what_stripes_library_verifies(
    start_sim: StartSim, receiver: Receiver
) -> None:
    secret = "whsec_simulator_stripe_test"
    sim = await start_sim(signature_format="stripe", webhook_secret=secret)
    await sim.charge()

    webhook = await receiver.next()

    header = webhook.headers["stripe-signature"]
    assert stripe.WebhookSignature.verify_header(webhook.body, header, secret, tolerance=300)
    assert "webhook-signature" not in webhook.headers

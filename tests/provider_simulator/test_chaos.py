"""The simulator misbehaving on purpose: run-time knobs, seeded dice, restarts, payouts/refunds."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.provider_simulator.conftest import Receiver, Sim, StartSim


async def post(sim: Sim, kind: str, key: str, **body: Any) -> tuple[int, Any, dict[str, str]]:
    async with sim.client.post(f"/v1/{kind}", json=body, headers={"Idempotency-Key": key}) as r:
        return r.status, await r.json(), dict(r.headers)


async def charge(sim: Sim, key: str = "k1", **changes: Any) -> tuple[int, Any, dict[str, str]]:
    body = {
        "amount_minor": 1250,
        "currency": "EUR",
        "payment_method": "pm_card_visa",
        "reference": "pay_1",
        **changes,
    }
    return await post(sim, "charges", key, **body)


async def configure(sim: Sim, **knobs: Any) -> tuple[int, Any]:
    return await sim.call("PATCH", "/_sim/config", json=knobs)


async def test_the_idempotency_key_header_is_required(sim: Sim) -> None:
    status, body = await sim.call(
        "POST",
        "/v1/charges",
        json={"amount_minor": 1, "currency": "EUR", "payment_method": "pm", "reference": "r"},
    )

    assert status == 400
    assert body["error"]["field"] == "Idempotency-Key"


async def test_knobs_change_at_run_time_and_are_validated(sim: Sim) -> None:
    status, config = await configure(sim, decline_rate=0.25, outage=True)
    assert status == 200
    assert (config["decline_rate"], config["outage"], config["name"]) == (
        0.25,
        True,
        "sim-primary",
    )

    status, body = await configure(sim, decline_rate=2)
    assert status == 400
    assert body["error"]["field"] == "decline_rate"
    status, body = await configure(sim, no_such_knob=1)
    assert status == 400


async def test_an_outage_answers_503_not_processed_and_records_nothing(sim: Sim) -> None:
    await configure(sim, outage=True)

    status, body, headers = await charge(sim)

    assert (status, body["error"]["code"], headers["Provider-Processed"]) == (
        503,
        "outage",
        "false",
    )
    _, ops = await sim.call("GET", "/_sim/operations")
    assert ops["operations"] == []
    await configure(sim, outage=False)
    assert (await charge(sim))[0] == 202


async def test_the_error_rate_is_seeded_so_a_run_repeats(start_sim: StartSim) -> None:
    async def run() -> list[int]:
        sim = await start_sim(seed=42, error_rate=0.5, settle_delay_ms=60_000)
        return [(await charge(sim, key=f"k{i}"))[0] for i in range(20)]

    first, second = await run(), await run()

    assert first == second
    assert set(first) == {202, 503}


async def test_a_request_it_never_answers_was_still_processed(start_sim: StartSim) -> None:
    sim = await start_sim(timeout_rate=1.0, settle_delay_ms=60_000)

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await charge(sim, key="k-lost")
    await configure(sim, timeout_rate=0)

    status, found = await sim.call("GET", "/v1/charges?idempotency_key=k-lost")
    assert (status, found["status"]) == (200, "processing")
    _, config = await sim.call("GET", "/_sim/config")
    assert config["unanswered_requests"] == 1


async def test_a_dropped_request_was_never_processed_and_a_lookup_says_so(
    start_sim: StartSim,
) -> None:
    sim = await start_sim(drop_rate=1.0)

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await charge(sim, key="k-dropped")
    await configure(sim, drop_rate=0)

    status, found = await sim.call("GET", "/v1/charges?idempotency_key=k-dropped")
    assert (status, found["error"]["code"]) == (404, "charge_not_found")
    _, ops = await sim.call("GET", "/_sim/operations")
    assert ops["operations"] == []
    _, config = await sim.call("GET", "/_sim/config")
    assert (config["dropped_requests"], config["drop_rate"]) == (1, 0.0)
    # The same key sent again once the provider receives it: processed then, once.
    assert (await charge(sim, key="k-dropped"))[0] == 202


async def test_the_decline_rate_fails_settlements(sim: Sim, receiver: Receiver) -> None:
    await configure(sim, decline_rate=1.0)

    _, created, _ = await charge(sim)
    webhook = await receiver.next()

    payload = json.loads(webhook.body)
    assert (payload["type"], payload["data"]["failure_reason"]) == (
        "charge.failed",
        "card_declined",
    )
    assert payload["data"]["id"] == created["id"]


async def test_duplicated_and_reordered_webhooks(sim: Sim, receiver: Receiver) -> None:
    await configure(sim, webhook_duplicate_rate=1.0, webhook_reorder_rate=1.0)

    await charge(sim)
    types = sorted([json.loads((await receiver.next()).body)["type"] for _ in range(3)])

    # The outcome twice (same event id), then the processing event it overtook.
    assert types == ["charge.processing", "charge.succeeded", "charge.succeeded"]


async def test_a_dropped_webhook_is_never_sent_but_the_outcome_is_readable(
    sim: Sim, receiver: Receiver
) -> None:
    await configure(sim, webhook_drop_rate=1.0)
    _, created, _ = await charge(sim)

    for _ in range(50):
        _, looked_up = await sim.call("GET", f"/v1/charges/{created['id']}")
        if looked_up["status"] != "processing":
            break
        await asyncio.sleep(0.05)
    await configure(sim, webhook_drop_rate=0.0)
    await charge(sim, key="k-after")
    webhook = json.loads((await receiver.next()).body)

    assert looked_up["status"] == "succeeded"
    # The first webhook the receiver sees is the second charge's: the first was never sent.
    assert webhook["data"]["idempotency_key"] == "k-after"
    _, events = await sim.call("GET", "/_sim/events")
    assert sorted(e["state"] for e in events["events"]) == ["delivered", "failed"]


async def test_a_delayed_webhook_arrives_late(sim: Sim, receiver: Receiver) -> None:
    await configure(sim, webhook_delay_rate=1.0, webhook_delay_ms=300)
    loop = asyncio.get_running_loop()
    started = loop.time()

    await charge(sim)
    await receiver.next()

    assert loop.time() - started >= 0.3


async def test_payout_and_refund(sim: Sim, receiver: Receiver) -> None:
    _, charged, _ = await charge(sim)
    await receiver.next()  # settled

    status, payout, _ = await post(
        sim, "payouts", "p1", amount_minor=500, currency="EUR", destination="acct", reference="r"
    )
    assert (status, payout["object"]) == (202, "payout")
    status, refund, _ = await post(
        sim, "refunds", "r1", amount_minor=1000, currency="EUR", charge=charged["id"], reference="r"
    )
    assert (status, refund["charge"]) == (202, charged["id"])
    status, body, _ = await post(
        sim, "refunds", "r2", amount_minor=251, currency="EUR", charge=charged["id"], reference="r"
    )
    assert (status, body["error"]["code"]) == (422, "amount_too_large")
    status, body, _ = await post(
        sim, "refunds", "r3", amount_minor=1, currency="EUR", charge="ch_nope", reference="r"
    )
    assert status == 404


async def test_unsettled_charges_survive_a_restart(
    start_sim: StartSim, receiver: Receiver, tmp_path: Path
) -> None:
    first = await start_sim(data_dir=tmp_path, settle_delay_ms=60_000)
    _, created, _ = await charge(first, key="k-durable")
    await first.client.close()
    # A second instance on the same data folder plays the restarted process.
    restarted = await start_sim(data_dir=tmp_path, settle_delay_ms=0)

    webhook = await receiver.next()

    assert json.loads(webhook.body)["data"]["id"] == created["id"]
    status, replay, _ = await charge(restarted, key="k-durable")
    assert (status, replay["id"], replay["status"]) == (200, created["id"], "succeeded")


async def test_deliveries_run_concurrently(start_sim: StartSim, receiver: Receiver) -> None:
    sim = await start_sim()
    async with aiohttp.ClientSession():
        await asyncio.gather(*(charge(sim, key=f"k{i}") for i in range(10)))

    received = [await receiver.next() for _ in range(10)]

    assert len({json.loads(w.body)["id"] for w in received}) == 10

"""A deposit across every real process: payment -> gateway -> provider simulator -> webhook
adapter -> gateway -> Redis Streams -> payment -> wallet, on real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import pytest
from redis.asyncio import Redis
from sqlalchemy import text

from common import db
from common.events import GATEWAY_STREAM, PAYMENT_SAGA_STREAM, PAYMENT_STREAM, WALLET_STREAM
from paysuite.events.v1 import events_pb2
from paysuite.payment.v1 import payment_pb2
from paysuite.wallet.v1 import wallet_pb2
from tests.conftest import Suite
from tests.integration.helpers import (
    clients,
    open_account,
    stream_events,
    usd,
    wait_for_events,
    wait_for_status,
)
from wallet_service.bootstrap import DATABASE as WALLET_DB

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

P = payment_pb2


async def test_deposit_reaches_completed_and_credits_the_wallet(suite: Suite, redis: Redis) -> None:
    async with clients(suite) as c:
        account_id = await open_account(c)
        key = f"it-{uuid.uuid4()}"
        created = await c.payments.CreateDeposit(
            P.CreateDepositRequest(idempotency_key=key, account_id=account_id, amount=usd(1250))
        )
        # Answered after one commit: the charge runs asynchronously, from the durable event.
        assert created.status == P.PAYMENT_STATUS_INITIATED
        assert created.kind == P.PAYMENT_KIND_DEPOSIT

        done = await wait_for_status(c, created.payment_id, {P.PAYMENT_STATUS_COMPLETED})
        assert done.amount == usd(1250)

        balance = await c.wallet.GetBalance(wallet_pb2.GetBalanceRequest(account_id=account_id))
        assert balance.available == usd(1250)
        assert balance.total == usd(1250)

        history = await c.payments.ListPaymentEvents(
            P.ListPaymentEventsRequest(payment_id=created.payment_id)
        )
        assert [(h.sequence, h.to_status) for h in history.changes] == [
            (1, P.PAYMENT_STATUS_INITIATED),
            (2, P.PAYMENT_STATUS_PENDING),
            (3, P.PAYMENT_STATUS_COMPLETED),
        ]
        # The audit trail: every saga step and transition, in order (seed 004's success flow).
        assert [(s.step, s.event_type) for s in history.steps] == list(
            enumerate(
                [
                    "status.initiated",
                    "charge.requested",
                    "charge.accepted",
                    "status.pending",
                    "provider.charge_succeeded",
                    "credit.completed",
                    "status.completed",
                ],
                start=1,
            )
        )
        assert history.steps[2].data["operation_id"] == done.gateway_operation_id

        # The same request again: the stored response (the payment as first answered, as
        # Stripe's keys do), and no money moves twice.
        again = await c.payments.CreateDeposit(
            P.CreateDepositRequest(idempotency_key=key, account_id=account_id, amount=usd(1250))
        )
        assert (again.payment_id, again.version) == (created.payment_id, created.version)
        assert again.status == P.PAYMENT_STATUS_INITIATED
        balance = await c.wallet.GetBalance(wallet_pb2.GetBalanceRequest(account_id=account_id))
        assert balance.available == usd(1250)

    prefix = suite.settings.stream_prefix
    # Each event on one stream: the saga's trigger on its own, the rest on the public one, so
    # no consumer group is delivered an entry it does not act on.
    saga_events = await wait_for_events(redis, prefix + PAYMENT_SAGA_STREAM, created.payment_id, 1)
    assert [(e.event_type, e.aggregate_version) for e in saga_events] == [("payment.initiated", 1)]
    payment_events = await wait_for_events(redis, prefix + PAYMENT_STREAM, created.payment_id, 2)
    assert [e.event_type for e in payment_events] == ["payment.pending", "payment.completed"]
    assert [e.aggregate_version for e in payment_events] == [2, 3]
    completed = events_pb2.PaymentStatusChanged()
    assert payment_events[-1].payload.Unpack(completed)
    assert completed.destination_account_id == account_id
    assert completed.amount == usd(1250)

    charge_events = [
        e
        for e in await wait_for_events(redis, prefix + GATEWAY_STREAM, done.gateway_operation_id, 1)
        if e.correlation_id == created.payment_id
    ]
    # Only the outcome: nobody acts on charge.pending, so it is not published.
    assert [e.event_type for e in charge_events] == ["charge.succeeded"]

    # Nobody in the suite reads the wallet's stream: by default it publishes nothing
    # (tests/integration/wallet_service/test_published_events.py).
    assert await stream_events(redis, prefix + WALLET_STREAM, account_id) == []


async def test_declined_deposit_ends_failed_with_the_reason(suite: Suite) -> None:
    async with clients(suite) as c:
        account_id = await open_account(c)
        created = await c.payments.CreateDeposit(
            P.CreateDepositRequest(
                idempotency_key=f"it-{uuid.uuid4()}",
                account_id=account_id,
                amount=usd(700),
                payment_method="pm_card_declined",
            )
        )
        failed = await wait_for_status(c, created.payment_id, {P.PAYMENT_STATUS_FAILED})
        assert failed.failure_reason == "card_declined"
        balance = await c.wallet.GetBalance(wallet_pb2.GetBalanceRequest(account_id=account_id))
        assert balance.total == usd(0)
        history = await c.payments.ListPaymentEvents(
            P.ListPaymentEventsRequest(payment_id=created.payment_id)
        )
        assert [h.to_status for h in history.changes] == [
            P.PAYMENT_STATUS_INITIATED,
            P.PAYMENT_STATUS_PENDING,
            P.PAYMENT_STATUS_FAILED,
        ]


async def test_a_webhook_delivered_twice_moves_money_once(suite: Suite) -> None:
    async with clients(suite) as c, aiohttp.ClientSession() as http:
        account_id = await open_account(c)
        created = await c.payments.CreateDeposit(
            P.CreateDepositRequest(
                idempotency_key=f"it-{uuid.uuid4()}", account_id=account_id, amount=usd(300)
            )
        )
        done = await wait_for_status(c, created.payment_id, {P.PAYMENT_STATUS_COMPLETED})
        async with http.get(f"{suite.simulator_url}/_sim/events") as response:
            sent = (await response.json())["events"]
        event_id = ""
        for event in sent:
            if event["type"] != "charge.succeeded":
                continue
            reference = await _charge_reference(http, suite, event["charge_id"])
            if reference == done.gateway_operation_id:
                event_id = event["id"]
        assert event_id, "the simulator sent no charge.succeeded for this payment"
        async with http.post(f"{suite.simulator_url}/_sim/events/{event_id}/redeliver") as resp:
            assert resp.status == 202
        await _wait_delivered_twice(http, suite, event_id)
        balance = await c.wallet.GetBalance(wallet_pb2.GetBalanceRequest(account_id=account_id))
        assert balance.total == usd(300)


async def _charge_reference(http: aiohttp.ClientSession, suite: Suite, charge_id: str) -> str:
    async with http.get(f"{suite.simulator_url}/v1/charges/{charge_id}") as response:
        return str((await response.json())["reference"])


async def _wait_delivered_twice(http: aiohttp.ClientSession, suite: Suite, event_id: str) -> None:
    for _ in range(200):
        async with http.get(f"{suite.simulator_url}/_sim/events") as response:
            event = next(e for e in (await response.json())["events"] if e["id"] == event_id)
        if event["attempts"] >= 2 and event["last_status"] == 200:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"redelivery of {event_id} not acknowledged: {event}")


async def test_ledger_invariants_hold_after_the_flows(suite: Suite) -> None:
    """Invariants 1-3 over everything the tests above wrote, checked in the database itself."""
    engine = db.create_engine(WALLET_DB.url(suite.settings), pool_size=1)
    try:
        async with engine.connect() as conn:
            unbalanced = await conn.scalar(
                text(
                    "SELECT count(*) FROM (SELECT transaction_id FROM ledger_entries"
                    " GROUP BY transaction_id, currency HAVING sum(amount_minor) <> 0) AS t"
                )
            )
            drifted = await conn.scalar(
                text(
                    "SELECT count(*) FROM accounts a WHERE a.kind = 'customer' AND a.total_minor"
                    " <> (SELECT coalesce(sum(e.amount_minor), 0) FROM ledger_entries e"
                    " WHERE e.account_id = a.account_id)"
                )
            )
            negative = await conn.scalar(
                text(
                    "SELECT count(*) FROM accounts"
                    " WHERE kind = 'customer' AND total_minor - held_minor < 0"
                )
            )
            entries = await conn.scalar(text("SELECT count(*) FROM ledger_entries"))
    finally:
        await engine.dispose()
    assert entries, "the flows above should have written ledger entries"
    assert (unbalanced, drifted, negative) == (0, 0, 0)


async def test_a_charge_the_wallet_can_never_credit_turns_into_a_refund(suite: Suite) -> None:
    """The provider has the money, but the credit would overflow the balance: the wallet's
    LIMIT_EXCEEDED is final, so the deposit moves to refunding instead of being retried, and
    the compensation refund gives the customer their money back (seed 004's failure flow)."""
    async with clients(suite) as c:
        account_id = await open_account(c)
        nearly_full = await c.payments.CreateDeposit(
            P.CreateDepositRequest(
                idempotency_key=f"it-{uuid.uuid4()}",
                account_id=account_id,
                amount=usd(2**63 - 1_000),
            )
        )
        await wait_for_status(c, nearly_full.payment_id, {P.PAYMENT_STATUS_COMPLETED})
        overflowing = await c.payments.CreateDeposit(
            P.CreateDepositRequest(
                idempotency_key=f"it-{uuid.uuid4()}", account_id=account_id, amount=usd(5_000)
            )
        )
        refunded = await wait_for_status(c, overflowing.payment_id, {P.PAYMENT_STATUS_REFUNDED})
        assert "wallet credit impossible" in refunded.failure_reason
        trail = await c.payments.ListPaymentEvents(
            P.ListPaymentEventsRequest(payment_id=overflowing.payment_id)
        )
        types = [s.event_type for s in trail.steps]
        start = types.index("provider.charge_succeeded")
        assert types[start:] == [
            "provider.charge_succeeded",
            "credit.failed",
            "compensation.started",
            "status.refunding",
            "refund.requested",
            "refund.accepted",
            "provider.refund_succeeded",
            "status.refunded",
        ]
        assert "LIMIT" in trail.steps[start + 1].error.upper()
        balance = await c.wallet.GetBalance(wallet_pb2.GetBalanceRequest(account_id=account_id))
        assert balance.total == usd(2**63 - 1_000)


async def test_twenty_concurrent_identical_deposits_make_one_payment(suite: Suite) -> None:
    async with clients(suite) as c:
        account_id = await open_account(c)
        request = P.CreateDepositRequest(
            idempotency_key=f"it-{uuid.uuid4()}", account_id=account_id, amount=usd(900)
        )
        answers = await asyncio.gather(*(c.payments.CreateDeposit(request) for _ in range(20)))
        assert len({a.payment_id for a in answers}) == 1
        listed = await c.payments.ListPayments(P.ListPaymentsRequest(account_id=account_id))
        assert [p.payment_id for p in listed.payments] == [answers[0].payment_id]
        await wait_for_status(c, answers[0].payment_id, {P.PAYMENT_STATUS_COMPLETED})
        balance = await c.wallet.GetBalance(wallet_pb2.GetBalanceRequest(account_id=account_id))
        assert balance.total == usd(900)

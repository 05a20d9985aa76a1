"""The sweeps against the real services, PostgreSQL, Redis and provider simulator. Time is
moved by handing the sweeps a later `now`, never by sleeping through a threshold."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from paysuite.payment.v1 import payment_pb2
from paysuite.wallet.v1 import wallet_pb2
from recovery_worker.bootstrap import Connections, build_worker
from recovery_worker.domain.model import SweepStatus
from tests.integration.helpers import Clients, clients, open_account, usd, wait_for_status
from tests.integration.recovery_worker.conftest import Rig, later, sweep

pytestmark = [pytest.mark.integration]

PENDING = payment_pb2.PAYMENT_STATUS_PENDING
INITIATED = payment_pb2.PAYMENT_STATUS_INITIATED
COMPLETED = payment_pb2.PAYMENT_STATUS_COMPLETED


async def deposit(c: Clients, account_id: str) -> payment_pb2.Payment:
    return await c.payments.CreateDeposit(
        payment_pb2.CreateDepositRequest(
            idempotency_key=str(uuid.uuid4()),
            account_id=account_id,
            amount=usd(1500),
            payment_method="pm_card_ok",
        )
    )


async def settled_at_provider(rig: Rig) -> None:
    """The provider has decided every charge (its webhooks may still be held back)."""
    async with asyncio.timeout(10):
        while True:
            if "pending" not in await rig.provider_statuses():
                return
            await asyncio.sleep(0.05)


async def pending_with_lost_webhook(rig: Rig, c: Clients) -> payment_pb2.Payment:
    """A deposit the provider accepted and settled, whose webhook never arrives (held back
    for two minutes): pending, with nothing left to move it but the worker."""
    await rig.chaos(webhook_delay_rate=1.0, webhook_delay_ms=120_000, settle_delay_ms=20)
    created = await deposit(c, await open_account(c))
    payment = await wait_for_status(c, created.payment_id, {PENDING})
    await settled_at_provider(rig)
    return payment


async def test_a_pending_deposit_whose_webhook_never_came_is_completed_by_a_sync(
    rig: Rig, connections: Connections
) -> None:
    pending = sweep(rig, connections, "pending")
    async with clients(rig.suite) as c:
        try:
            payment = await pending_with_lost_webhook(rig, c)

            not_yet = await pending.run_once(datetime.now(UTC))
            report = await pending.run_once(later())
            completed = await wait_for_status(c, payment.payment_id, {COMPLETED}, timeout_s=10)
            after = await pending.run_once(later())
        finally:
            await rig.calm()

    assert (not_yet.found, not_yet.acted) == (0, 0)
    assert (report.status, report.found, report.acted) == (SweepStatus.DONE, 1, 1)
    assert completed.failure_reason == ""
    assert after.found == 0


async def test_two_workers_sweeping_at_once_act_once(rig: Rig, connections: Connections) -> None:
    async with clients(rig.suite) as c:
        try:
            payment = await pending_with_lost_webhook(rig, c)
            workers = [build_worker(rig.settings, connections, clock=later) for _ in range(2)]
            pendings = [sweep(rig, connections, "pending") for _ in workers]

            reports = await asyncio.gather(
                *(w.run_sweep(s) for w, s in zip(workers, pendings, strict=True))
            )
            await wait_for_status(c, payment.payment_id, {COMPLETED}, timeout_s=10)
        finally:
            await rig.calm()

    assert sorted(r.status for r in reports) == [SweepStatus.BUSY, SweepStatus.DONE]
    assert sum(r.acted for r in reports) == 1


async def test_a_deposit_whose_provider_timed_out_is_reported_then_completed(
    rig: Rig, connections: Connections
) -> None:
    initiated = sweep(rig, connections, "initiated")
    pending = sweep(rig, connections, "pending")
    async with clients(rig.suite) as c:
        try:
            # The provider takes the charge but never answers, and holds its webhook back.
            await rig.chaos(timeout_rate=1.0, webhook_delay_rate=1.0, webhook_delay_ms=120_000)
            created = await deposit(c, await open_account(c))
            await asyncio.sleep(0.6)  # the charge has timed out at least once (500 ms)
            reported = await initiated.run_once(later())
            waiting = await c.payments.GetPayment(
                payment_pb2.GetPaymentRequest(payment_id=created.payment_id)
            )
            # The provider answers again: the saga's retry gets the charge accepted, but the
            # outcome only ever reached the provider's held-back webhook.
            await rig.chaos(timeout_rate=0)
            await wait_for_status(c, created.payment_id, {PENDING}, timeout_s=10)
            await settled_at_provider(rig)
            synced = await pending.run_once(later())
            completed = await wait_for_status(c, created.payment_id, {COMPLETED}, timeout_s=10)
        finally:
            await rig.calm()

    assert waiting.status == INITIATED
    assert (reported.found, reported.acted) == (1, 0)
    assert reported.notes[0].startswith(f"{created.payment_id} (deposit)")
    assert (synced.found, synced.acted) == (1, 1)
    assert completed.gateway_operation_id


async def test_expired_holds_are_released(rig: Rig, connections: Connections) -> None:
    async with clients(rig.suite) as c:
        account_id = await open_account(c)
        await c.wallet.Credit(
            wallet_pb2.CreditRequest(
                operation_ref=str(uuid.uuid4()), account_id=account_id, amount=usd(1000)
            )
        )
        expires = Timestamp()
        expires.FromDatetime(datetime.now(UTC) + timedelta(milliseconds=300))
        hold = await c.wallet.PlaceHold(
            wallet_pb2.PlaceHoldRequest(
                operation_ref=str(uuid.uuid4()),
                account_id=account_id,
                amount=usd(400),
                expires_at=expires,
            )
        )
        # The wallet decides expiry by its own clock, which a test cannot move: wait it out.
        await asyncio.sleep(0.4)

        report = await sweep(rig, connections, "expired_holds").run_once(later())

        released = await c.wallet.GetHold(wallet_pb2.GetHoldRequest(hold_id=hold.hold_id))
        balance = await c.wallet.GetBalance(wallet_pb2.GetBalanceRequest(account_id=account_id))
    assert (report.found, report.acted) == (1, 1)
    assert released.status == "expired"
    assert balance.available.amount_minor == 1000

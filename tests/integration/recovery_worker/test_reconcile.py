"""Reconciliation on the real services: a completed deposit reconciles clean, and ledger
movements written behind the payment service's back (an unbalanced journal row added to a
deposit's credit; a wallet credit under a failed deposit's credit ref) are found and open
review cases whose evidence shows both sides."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from common import db
from paysuite.payment.v1 import payment_pb2
from paysuite.wallet.v1 import wallet_pb2
from recovery_worker.bootstrap import Connections
from recovery_worker.domain.model import SweepReport, SweepStatus
from recovery_worker.service_layer.sweeps import Sweep
from tests.integration.helpers import Clients, clients, open_account, usd, wait_for_status
from tests.integration.recovery_worker.conftest import Rig, sweep
from wallet_service.bootstrap import DATABASE

pytestmark = [pytest.mark.integration]

COMPLETED = payment_pb2.PAYMENT_STATUS_COMPLETED
FAILED = payment_pb2.PAYMENT_STATUS_FAILED


async def deposit(c: Clients, method: str = "pm_card_ok") -> payment_pb2.Payment:
    created = await c.payments.CreateDeposit(
        payment_pb2.CreateDepositRequest(
            idempotency_key=str(uuid.uuid4()),
            account_id=await open_account(c),
            amount=usd(1500),
            payment_method=method,
        )
    )
    settled = {COMPLETED, FAILED}
    return await wait_for_status(c, created.payment_id, settled, timeout_s=15)


async def reconcile(rig: Rig, connections: Connections) -> SweepReport:
    """A run from scratch: the marks of earlier runs (other tests') are forgotten first."""
    marks = f"{rig.settings.stream_prefix}paysuite.recovery.mark.*"
    keys = [key async for key in connections.redis.scan_iter(match=marks)]
    if keys:
        await connections.redis.delete(*keys)
    reconciliation: Sweep = sweep(rig, connections, "reconcile")
    report = await reconciliation.run_once(datetime.now(UTC))
    assert report.status is SweepStatus.DONE, report
    return report


async def cases_of(c: Clients, payment_id: str) -> list[payment_pb2.ReviewCase]:
    found: list[payment_pb2.ReviewCase] = []
    for status in (payment_pb2.REVIEW_CASE_STATUS_OPEN, payment_pb2.REVIEW_CASE_STATUS_RESOLVED):
        page = await c.payments.ListReviewCases(
            payment_pb2.ListReviewCasesRequest(status=status, page_size=100)
        )
        found += [case for case in page.cases if case.payment_id == payment_id]
    return found


async def test_a_completed_deposit_reconciles_clean(rig: Rig, connections: Connections) -> None:
    async with clients(rig.suite) as c:
        payment = await deposit(c)
        await reconcile(rig, connections)
        assert payment.status == COMPLETED
        assert await cases_of(c, payment.payment_id) == []


async def test_an_unbalanced_row_added_to_a_credit_opens_a_case_with_both_sides(
    rig: Rig, connections: Connections
) -> None:
    async with clients(rig.suite) as c:
        payment = await deposit(c)
        assert payment.status == COMPLETED
        engine = db.create_engine(DATABASE.url(rig.settings), pool_size=1)
        try:
            # The journal refuses UPDATE and DELETE, not INSERT: an extra posting of 5.00 on
            # the customer's account, in the credit's transaction, with nothing to balance it.
            async with engine.begin() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO ledger_entries"
                        " (entry_id, transaction_id, account_id, amount_minor, currency)"
                        " SELECT gen_random_uuid(), transaction_id, :account, 500, 'USD'"
                        " FROM ledger_transactions WHERE operation_ref = :ref"
                    ),
                    {
                        "account": payment.destination_account_id,
                        "ref": f"{payment.payment_id}:credit",
                    },
                )
        finally:
            await engine.dispose()

        report = await reconcile(rig, connections)
        again = await reconcile(rig, connections)
        [case] = await cases_of(c, payment.payment_id)

    assert report.acted >= 1
    assert again.acted >= 1  # reported again, recorded once (below)
    assert case.reason_code == "RECONCILIATION_MISMATCH"
    reasons = sorted(e.reason for e in case.evidence)
    assert len(reasons) == 2, reasons
    assert any("do not balance" in r for r in reasons)
    assert any("moved 2000 USD" in r for r in reasons)
    details = case.evidence[0].details
    assert details["payment.amount"] == "1500 USD"
    assert details["payment.status"] == "completed"
    assert "unbalanced" in details["wallet.credit"]
    assert f"{payment.destination_account_id} +500 USD" in details["wallet.credit"]


async def test_a_credit_under_a_failed_deposits_ref_opens_a_case(
    rig: Rig, connections: Connections
) -> None:
    async with clients(rig.suite) as c:
        payment = await deposit(c, "pm_card_declined")
        assert payment.status == FAILED
        ref = f"{payment.payment_id}:credit"
        await c.wallet.Credit(
            wallet_pb2.CreditRequest(
                operation_ref=ref, account_id=payment.destination_account_id, amount=usd(1500)
            )
        )
        await reconcile(rig, connections)
        [case] = await cases_of(c, payment.payment_id)

    [evidence] = case.evidence
    assert evidence.reason == f"failed deposit moved money in the wallet ({ref})"
    assert evidence.details["payment.status"] == "failed"
    assert f"{payment.destination_account_id} +1500 USD" in evidence.details["wallet.credit"]

"""The sweeps against the real services, PostgreSQL, Redis and provider simulator (the only
stand-in). Time is moved by handing the sweeps a later `now`, never by sleeping through a
threshold; only the gateway's short grace before it believes "no such operation" (its own
clock) is waited out."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from paysuite.payment.v1 import payment_pb2
from paysuite.wallet.v1 import wallet_pb2
from recovery_worker.bootstrap import Connections, build_worker
from recovery_worker.domain.model import SweepReport, SweepStatus
from tests.integration.helpers import Clients, clients, open_account, usd, wait_for_status
from tests.integration.recovery_worker.conftest import NOT_FOUND_GRACE_MS, Rig, later, sweep

pytestmark = [pytest.mark.integration]

P = payment_pb2
PENDING = P.PAYMENT_STATUS_PENDING
INITIATED = P.PAYMENT_STATUS_INITIATED
COMPLETED = P.PAYMENT_STATUS_COMPLETED
FAILED = P.PAYMENT_STATUS_FAILED
REFUNDING = P.PAYMENT_STATUS_REFUNDING
REFUNDED = P.PAYMENT_STATUS_REFUNDED
IN_REVIEW = P.PAYMENT_STATUS_REQUIRES_MANUAL_REVIEW
NOT_PROCESSED = "not_processed_by_provider"


async def deposit(c: Clients, account_id: str) -> P.Payment:
    return await c.payments.CreateDeposit(
        P.CreateDepositRequest(
            idempotency_key=str(uuid.uuid4()),
            account_id=account_id,
            amount=usd(1500),
            payment_method="pm_card_ok",
        )
    )


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "not within the time"
        await asyncio.sleep(0.05)


async def operations_of(c: Clients, payment_id: str) -> set[str]:
    """The gateway operations the payment knows of: its own, and each refund attempt's."""
    payment = await c.payments.GetPayment(P.GetPaymentRequest(payment_id=payment_id))
    noted = {s.data["operation_id"] for s in await trail(c, payment_id) if "operation_id" in s.data}
    return (noted | {payment.gateway_operation_id}) - {""}


async def settled_at_provider(rig: Rig, c: Clients, payment_id: str) -> None:
    """The provider has decided every operation of the payment it has (their webhooks may
    still be held back)."""

    async def settled() -> bool:
        statuses = await rig.provider_statuses(await operations_of(c, payment_id))
        return bool(statuses) and "processing" not in statuses

    await eventually(settled)


async def trail(c: Clients, payment_id: str) -> list[P.PaymentStep]:
    events = await c.payments.ListPaymentEvents(P.ListPaymentEventsRequest(payment_id=payment_id))
    return list(events.steps)


async def recovery_steps(c: Clients, payment_id: str) -> list[P.PaymentStep]:
    return [s for s in await trail(c, payment_id) if s.event_type.startswith("recovery.")]


async def outcome_unknown(c: Clients, payment_id: str) -> P.Payment:
    """The payment once its provider call timed out: initiated, its operation kept."""
    found: list[P.Payment] = []

    async def known() -> bool:
        found[:] = [await c.payments.GetPayment(P.GetPaymentRequest(payment_id=payment_id))]
        return bool(found[0].gateway_operation_id)

    await eventually(known)
    return found[0]


async def pending_with_lost_webhook(rig: Rig, c: Clients, account_id: str = "") -> P.Payment:
    """A deposit the provider accepted and settled, whose webhook never arrives (held back
    for two minutes): pending, with nothing left to move it but the worker."""
    await rig.chaos(webhook_delay_rate=1.0, webhook_delay_ms=120_000, settle_delay_ms=20)
    created = await deposit(c, account_id or await open_account(c))
    payment = await wait_for_status(c, created.payment_id, {PENDING})
    await settled_at_provider(rig, c, payment.payment_id)
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
            [step] = await recovery_steps(c, payment.payment_id)
        finally:
            await rig.calm()

    assert (not_yet.found, not_yet.acted) == (0, 0)
    assert (report.status, report.found, report.acted) == (SweepStatus.DONE, 1, 1)
    assert completed.failure_reason == ""
    assert after.found == 0
    # The audit trail says recovery asked the provider, at which rung, what it answered and
    # when it would have asked again.
    assert step.event_type == "recovery.sync_requested"
    data = dict(step.data)
    assert (data["requested_by"], data["rung"], data["outcome"]) == (
        "recovery-worker",
        "2",
        "settled",
    )
    assert (data["answer"], data["operation_id"]) == ("succeeded", completed.gateway_operation_id)
    updated = payment.updated_at.ToDatetime(UTC)
    assert datetime.fromisoformat(data["next_attempt_at"]) == updated + timedelta(days=1)


async def test_two_workers_sweeping_at_once_act_once(rig: Rig, connections: Connections) -> None:
    async with clients(rig.suite) as c:
        try:
            payment = await pending_with_lost_webhook(rig, c)
            # Two replicas: each its own name, as two live replicas must have.
            workers = [
                build_worker(
                    rig.settings.model_copy(update={"replica_name": f"recovery-{i}"}),
                    connections,
                    clock=later,
                )
                for i in range(2)
            ]
            pendings = [sweep(rig, connections, "pending") for _ in workers]

            reports = await asyncio.gather(
                *(w.run_sweep(s) for w, s in zip(workers, pendings, strict=True))
            )
            await wait_for_status(c, payment.payment_id, {COMPLETED}, timeout_s=10)
            noted = await recovery_steps(c, payment.payment_id)
        finally:
            await rig.calm()

    assert sorted(r.status for r in reports) == [SweepStatus.BUSY, SweepStatus.DONE]
    assert sum(r.acted for r in reports) == 1
    assert len(noted) == 1


async def test_the_same_attempt_sent_twice_at_once_is_noted_once(rig: Rig) -> None:
    async with clients(rig.suite) as c:
        try:
            payment = await pending_with_lost_webhook(rig, c)
            request = P.RecoverPaymentRequest(
                payment_id=payment.payment_id, attempt_id="twin", rung=0, requested_by="test"
            )
            answers = await asyncio.gather(*(c.payments.RecoverPayment(request) for _ in range(2)))
            await wait_for_status(c, payment.payment_id, {COMPLETED}, timeout_s=10)
            noted = await recovery_steps(c, payment.payment_id)
        finally:
            await rig.calm()

    assert {a.outcome for a in answers} == {P.RECOVERY_OUTCOME_SETTLED}
    assert answers[0].step == answers[1].step
    assert [s.data["attempt_id"] for s in noted] == ["twin"]


async def test_a_provider_confirming_success_after_a_timeout_completes_the_deposit(
    rig: Rig, connections: Connections
) -> None:
    initiated = sweep(rig, connections, "initiated")
    async with clients(rig.suite) as c:
        try:
            # The provider takes the charge but never answers, and holds its webhook back.
            await rig.chaos(
                timeout_rate=1.0,
                webhook_delay_rate=1.0,
                webhook_delay_ms=120_000,
                settle_delay_ms=20,
            )
            created = await deposit(c, await open_account(c))
            waiting = await outcome_unknown(c, created.payment_id)
            await settled_at_provider(rig, c, created.payment_id)

            report = await initiated.run_once(later())
            completed = await wait_for_status(c, created.payment_id, {COMPLETED}, timeout_s=10)
            steps = [s.event_type for s in await trail(c, created.payment_id)]
            [step] = await recovery_steps(c, created.payment_id)
        finally:
            await rig.calm()

    assert waiting.status == INITIATED  # never failed on the timeout
    assert (report.found, report.acted) == (1, 1)
    assert (step.data["outcome"], step.data["answer"]) == ("settled", "succeeded")
    assert completed.gateway_operation_id == waiting.gateway_operation_id
    assert steps.count("charge.outcome_unknown") == 1
    assert "status.completed" in steps


async def never_processed(rig: Rig, connections: Connections, payment_id: str) -> SweepReport:
    """Waits out the gateway's grace, then lets the worker ask the provider."""
    async with clients(rig.suite) as c:
        await outcome_unknown(c, payment_id)
    await asyncio.sleep(NOT_FOUND_GRACE_MS / 1000 + 0.1)
    return await sweep(rig, connections, "initiated").run_once(later())


async def test_a_provider_confirming_it_never_processed_the_charge_fails_the_deposit(
    rig: Rig, connections: Connections
) -> None:
    async with clients(rig.suite) as c:
        try:
            await rig.chaos(drop_rate=1.0)  # charges lost before the provider sees them
            created = await deposit(c, await open_account(c))
            report = await never_processed(rig, connections, created.payment_id)
            failed = await wait_for_status(c, created.payment_id, {FAILED}, timeout_s=10)
            [step] = await recovery_steps(c, created.payment_id)
            balance = await c.wallet.GetBalance(
                wallet_pb2.GetBalanceRequest(account_id=created.destination_account_id)
            )
        finally:
            await rig.calm()

    assert (report.found, report.acted) == (1, 1)
    assert failed.failure_reason == NOT_PROCESSED
    assert (step.data["outcome"], step.data["answer"]) == ("settled", f"failed: {NOT_PROCESSED}")
    assert balance.total.amount_minor == 0


async def test_a_payout_the_provider_never_processed_fails_and_releases_its_hold(
    rig: Rig, connections: Connections
) -> None:
    async with clients(rig.suite) as c:
        account_id = await open_account(c)
        await c.wallet.Credit(
            wallet_pb2.CreditRequest(
                operation_ref=str(uuid.uuid4()), account_id=account_id, amount=usd(5000)
            )
        )
        try:
            await rig.chaos(drop_rate=1.0)
            created = await c.payments.CreateWithdrawal(
                P.CreateWithdrawalRequest(
                    idempotency_key=str(uuid.uuid4()),
                    account_id=account_id,
                    amount=usd(2000),
                    destination="acct_ok",
                )
            )
            held = await c.wallet.GetBalance(wallet_pb2.GetBalanceRequest(account_id=account_id))
            await never_processed(rig, connections, created.payment_id)
            failed = await wait_for_status(c, created.payment_id, {FAILED}, timeout_s=10)

            async def released() -> bool:
                balance = await c.wallet.GetBalance(
                    wallet_pb2.GetBalanceRequest(account_id=account_id)
                )
                return balance.available.amount_minor == 5000

            await eventually(released)
        finally:
            await rig.calm()

    assert held.available.amount_minor == 3000
    assert failed.failure_reason == NOT_PROCESSED


async def refunding_deposit(
    rig: Rig,
    c: Clients,
    connections: Connections,
    *,
    refund_settle_ms: int = 20,
    decline_refunds: bool = False,
) -> P.Payment:
    """A deposit the provider charged but the wallet cannot take in (its account closed),
    whose compensation refund the provider accepted and has not answered: refunding."""
    account_id = await open_account(c)
    await c.wallet.CloseAccount(
        wallet_pb2.AccountStatusRequest(operation_ref=str(uuid.uuid4()), account_id=account_id)
    )
    payment = await pending_with_lost_webhook(rig, c, account_id)
    await rig.chaos(settle_delay_ms=refund_settle_ms, decline_rate=1.0 if decline_refunds else 0)
    await sweep(rig, connections, "pending").run_once(later())
    refunding = await wait_for_status(c, payment.payment_id, {REFUNDING}, timeout_s=10)

    async def refund_sent() -> bool:
        return "refund.accepted" in [s.event_type for s in await trail(c, payment.payment_id)]

    await eventually(refund_sent)
    return refunding


async def test_a_refund_whose_answer_was_lost_is_asked_about_and_settles(
    rig: Rig, connections: Connections
) -> None:
    refunding_sweep = sweep(rig, connections, "refunding")
    async with clients(rig.suite) as c:
        try:
            payment = await refunding_deposit(rig, c, connections)
            await settled_at_provider(rig, c, payment.payment_id)
            since = payment.updated_at.ToDatetime(UTC)

            too_early = await refunding_sweep.run_once(since + timedelta(minutes=29))
            report = await refunding_sweep.run_once(since + timedelta(minutes=31))
            refunded = await wait_for_status(c, payment.payment_id, {REFUNDED}, timeout_s=10)
            # The charge's sync (the pending sweep, which made it refunding), then the refund's.
            charge_sync, step = await recovery_steps(c, payment.payment_id)
        finally:
            await rig.calm()

    assert (too_early.found, too_early.acted) == (0, 0)
    assert (report.found, report.acted) == (1, 1)
    assert refunded.failure_reason  # why it was refunded: the credit was impossible
    assert (step.event_type, step.data["answer"]) == ("recovery.sync_requested", "succeeded")
    assert step.data["operation_id"] != charge_sync.data["operation_id"]
    assert step.data["attempt_id"].startswith("refunding:")


async def test_a_refund_the_provider_declines_three_times_opens_a_case(
    rig: Rig, connections: Connections
) -> None:
    refunding_sweep = sweep(rig, connections, "refunding")
    async with clients(rig.suite) as c:
        try:
            # Every refund attempt is declined, its answer held back like the charge's.
            payment = await refunding_deposit(rig, c, connections, decline_refunds=True)
            since = payment.updated_at.ToDatetime(UTC)
            accepted = 1
            # Each attempt's answer is held back; the sweep asks about it at the next rung,
            # the provider says declined, and the saga sends the next attempt (a new key).
            for age in (timedelta(minutes=31), timedelta(minutes=61), timedelta(days=1)):
                await settled_at_provider(rig, c, payment.payment_id)
                await refunding_sweep.run_once(since + age + timedelta(minutes=1))
                accepted += 1

                async def sent_or_done(expected: int = accepted) -> bool:
                    steps = [s.event_type for s in await trail(c, payment.payment_id)]
                    return (
                        steps.count("refund.accepted") == expected
                        or "status.requires_manual_review" in steps
                    )

                await eventually(sent_or_done)
            in_review = await wait_for_status(c, payment.payment_id, {IN_REVIEW}, timeout_s=10)
            steps = [s.event_type for s in await trail(c, payment.payment_id)]
            cases = await c.payments.ListReviewCases(P.ListReviewCasesRequest(page_size=100))
        finally:
            await rig.calm()

    assert in_review.status == IN_REVIEW
    assert steps.count("refund.failed") == 3
    assert steps.count("recovery.sync_requested") == 1 + 3  # the charge's, then each refund's
    [case] = [case for case in cases.cases if case.payment_id == payment.payment_id]
    assert case.reason_code == "COMPENSATION_FAILED"


async def test_a_refund_left_unsettled_through_three_attempts_goes_to_review(
    rig: Rig, connections: Connections
) -> None:
    refunding_sweep = sweep(rig, connections, "refunding")
    async with clients(rig.suite) as c:
        try:
            # The provider sits on the refund: "processing" whenever it is asked.
            payment = await refunding_deposit(rig, c, connections, refund_settle_ms=600_000)
            since = payment.updated_at.ToDatetime(UTC)
            reports = [
                await refunding_sweep.run_once(since + age)
                for age in (
                    timedelta(minutes=31),
                    timedelta(minutes=61),
                    timedelta(days=1, minutes=1),
                )
            ]
            in_review = await wait_for_status(c, payment.payment_id, {IN_REVIEW}, timeout_s=10)
            noted = (await recovery_steps(c, payment.payment_id))[1:]  # after the charge's
            cases = await c.payments.ListReviewCases(P.ListReviewCasesRequest(page_size=100))
        finally:
            await rig.calm()

    assert [r.acted for r in reports] == [1, 1, 1]
    assert reports[-1].notes == (f"{payment.payment_id} (deposit): escalated to manual review",)
    assert [s.data["outcome"] for s in noted] == ["unknown", "unknown", "escalated"]
    assert [s.data["rung"] for s in noted] == ["0", "1", "2"]
    assert in_review.failure_reason.startswith("wallet credit impossible")  # why it refunds
    [case] = [case for case in cases.cases if case.payment_id == payment.payment_id]
    assert case.reason_code == "REFUND_STALLED"
    assert case.reason == "refund still unsettled after 3 recovery attempts"


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

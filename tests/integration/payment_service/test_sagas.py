"""Withdrawals, transfers, refunds and cancels end to end: real services, a real provider
simulator, real PostgreSQL and Redis. Balances are checked exactly after every flow."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from paysuite.payment.v1 import payment_pb2 as P
from paysuite.wallet.v1 import wallet_pb2
from tests.conftest import Suite
from tests.integration.helpers import (
    Clients,
    clients,
    error_details,
    open_account,
    usd,
    wait_for_status,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

DONE = {P.PAYMENT_STATUS_COMPLETED}


async def funded_account(c: Clients, amount: int) -> str:
    account_id = await open_account(c)
    deposit = await c.payments.CreateDeposit(
        P.CreateDepositRequest(
            idempotency_key=f"fund-{uuid.uuid4()}", account_id=account_id, amount=usd(amount)
        )
    )
    await wait_for_status(c, deposit.payment_id, DONE)
    return account_id


async def balance(c: Clients, account_id: str) -> tuple[int, int]:
    b = await c.wallet.GetBalance(wallet_pb2.GetBalanceRequest(account_id=account_id))
    return b.available.amount_minor, b.held.amount_minor


def withdrawal(
    account_id: str, amount: int, destination: str = "acct_ok", key: str = ""
) -> P.CreateWithdrawalRequest:
    return P.CreateWithdrawalRequest(
        idempotency_key=key or f"w-{uuid.uuid4()}",
        account_id=account_id,
        amount=usd(amount),
        destination=destination,
    )


async def steps(c: Clients, payment_id: str) -> list[str]:
    trail = await c.payments.ListPaymentEvents(P.ListPaymentEventsRequest(payment_id=payment_id))
    return [s.event_type for s in trail.steps]


async def test_a_withdrawal_holds_pays_out_and_captures(suite: Suite) -> None:
    async with clients(suite) as c:
        account_id = await funded_account(c, 5000)
        created = await c.payments.CreateWithdrawal(withdrawal(account_id, 2000))
        assert created.status == P.PAYMENT_STATUS_INITIATED
        assert created.kind == P.PAYMENT_KIND_WITHDRAWAL
        assert created.destination == "acct_ok"
        done = await wait_for_status(c, created.payment_id, DONE)
        assert done.gateway_operation_id
        assert await balance(c, account_id) == (3000, 0)
        assert await steps(c, created.payment_id) == [
            "status.initiated",
            "hold.placed",
            "payout.requested",
            "payout.accepted",
            "status.pending",
            "provider.payout_succeeded",
            "hold.captured",
            "status.completed",
        ]


async def test_a_declined_payout_releases_the_hold_and_fails(suite: Suite) -> None:
    async with clients(suite) as c:
        account_id = await funded_account(c, 5000)
        created = await c.payments.CreateWithdrawal(withdrawal(account_id, 2000, "acct_fail"))
        failed = await wait_for_status(c, created.payment_id, {P.PAYMENT_STATUS_FAILED})
        assert failed.failure_reason == "account_closed"
        assert await balance(c, account_id) == (5000, 0)
        trail = await steps(c, created.payment_id)
        assert trail[-3:] == ["provider.payout_failed", "hold.released", "status.failed"]


async def test_insufficient_funds_is_refused_at_once_and_replayed_alike(suite: Suite) -> None:
    async with clients(suite) as c:
        account_id = await funded_account(c, 1000)
        request = withdrawal(account_id, 1001)
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await c.payments.CreateWithdrawal(request)
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert error_details(refused.value)[1] == "INSUFFICIENT_FUNDS"
        listed = await c.payments.ListPayments(
            P.ListPaymentsRequest(account_id=account_id, kind=P.PAYMENT_KIND_WITHDRAWAL)
        )
        (payment,) = listed.payments
        assert payment.status == P.PAYMENT_STATUS_FAILED
        assert "payout.requested" not in await steps(c, payment.payment_id)  # no provider call
        assert await balance(c, account_id) == (1000, 0)


async def test_twenty_concurrent_identical_withdrawals_make_one_payment_and_one_hold(
    suite: Suite,
) -> None:
    async with clients(suite) as c:
        account_id = await funded_account(c, 5000)
        request = withdrawal(account_id, 700)
        answers = await asyncio.gather(
            *(c.payments.CreateWithdrawal(request) for _ in range(20)), return_exceptions=True
        )
        made = {a.payment_id for a in answers if isinstance(a, P.Payment)}
        aborted = [a for a in answers if not isinstance(a, P.Payment)]
        assert len(made) == 1, answers
        for error in aborted:  # only ever "still in flight, retry"
            assert isinstance(error, grpc.aio.AioRpcError)
            assert error_details(error)[1] == "IDEMPOTENCY_REQUEST_IN_FLIGHT"
        await wait_for_status(c, made.pop(), DONE)
        assert await balance(c, account_id) == (4300, 0)


async def test_a_transfer_completes_at_once_and_fx_without_a_rate_is_refused(
    suite: Suite,
) -> None:
    async with clients(suite) as c:
        source = await funded_account(c, 5000)
        target = await open_account(c)
        done = await c.payments.CreateTransfer(
            P.CreateTransferRequest(
                idempotency_key=f"t-{uuid.uuid4()}",
                source_account_id=source,
                destination_account_id=target,
                amount=usd(1234),
            )
        )
        assert (done.status, done.kind) == (P.PAYMENT_STATUS_COMPLETED, P.PAYMENT_KIND_TRANSFER)
        assert await balance(c, source) == (3766, 0)
        assert await balance(c, target) == (1234, 0)

        # CHF: the pair no fixture sets (the wallet tests' session-wide rates include USD->JPY,
        # so a JPY account here passed or failed by which tests ran first).
        chf = await open_account(c, "CHF")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await c.payments.CreateTransfer(
                P.CreateTransferRequest(
                    idempotency_key=f"t-{uuid.uuid4()}",
                    source_account_id=source,
                    destination_account_id=chf,
                    amount=usd(100),
                )
            )
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_details(refused.value)[1] == "FX_RATE_UNAVAILABLE"
        assert await balance(c, source) == (3766, 0)


async def test_partial_refunds_race_and_never_exceed_the_captured_amount(suite: Suite) -> None:
    async with clients(suite) as c:
        account_id = await open_account(c)
        deposit = await c.payments.CreateDeposit(
            P.CreateDepositRequest(
                idempotency_key=f"d-{uuid.uuid4()}", account_id=account_id, amount=usd(1000)
            )
        )
        await wait_for_status(c, deposit.payment_id, DONE)

        async def refund(amount: int) -> P.Payment | grpc.aio.AioRpcError:
            try:
                return await c.payments.RefundPayment(
                    P.RefundPaymentRequest(
                        idempotency_key=f"r-{uuid.uuid4()}",
                        payment_id=deposit.payment_id,
                        amount=usd(amount),
                    )
                )
            except grpc.aio.AioRpcError as exc:
                return exc

        answers = await asyncio.gather(*(refund(300) for _ in range(6)))
        made = [a for a in answers if isinstance(a, P.Payment)]
        assert len(made) == 3
        for refused in (a for a in answers if isinstance(a, grpc.aio.AioRpcError)):
            assert error_details(refused)[1] == "REFUND_EXCEEDS_CAPTURED"
        for refund_payment in made:
            assert refund_payment.parent_payment_id == deposit.payment_id
            await wait_for_status(c, refund_payment.payment_id, DONE)
        parent = await wait_for_status(c, deposit.payment_id, {P.PAYMENT_STATUS_PARTIALLY_REFUNDED})
        assert parent.refunded_amount == usd(900)
        assert await balance(c, account_id) == (100, 0)

        rest = await refund(100)
        assert isinstance(rest, P.Payment)
        await wait_for_status(c, rest.payment_id, DONE)
        await wait_for_status(c, deposit.payment_id, {P.PAYMENT_STATUS_REFUNDED})
        assert await balance(c, account_id) == (0, 0)
        again = await refund(1)
        assert isinstance(again, grpc.aio.AioRpcError)
        assert error_details(again)[1] == "PAYMENT_NOT_REFUNDABLE"


async def test_cancel_is_refused_once_the_provider_was_asked(suite: Suite) -> None:
    async with clients(suite) as c:
        account_id = await funded_account(c, 500)
        listed = await c.payments.ListPayments(P.ListPaymentsRequest(account_id=account_id))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await c.payments.CancelPayment(
                P.CancelPaymentRequest(payment_id=listed.payments[0].payment_id)
            )
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_details(refused.value)[1] == "PAYMENT_NOT_CANCELLABLE"

"""Bad input gets a clear error with field details and leaves no trace."""

from __future__ import annotations

import time
import uuid

import aiohttp
import grpc
import pytest
from sqlalchemy import text

from common import db
from payment_service.bootstrap import DATABASE as PAYMENT_DB
from paysuite.common.v1 import money_pb2
from paysuite.payment.v1 import payment_pb2
from tests.conftest import Suite
from tests.integration.helpers import clients, error_details, open_account, resource_info, usd

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

P = payment_pb2
UNKNOWN_ACCOUNT = "00000000-0000-4000-8000-000000000000"


@pytest.mark.parametrize(
    ("amount", "key", "field"),
    [
        (usd(0), "k", "amount.amount_minor"),
        (usd(-5), "k", "amount.amount_minor"),
        (money_pb2.Money(amount_minor=100, currency="XYZ"), "k", "amount.currency"),
        (money_pb2.Money(amount_minor=100, currency="usd"), "k", "amount.currency"),
        (None, "k", "amount"),
        (usd(100), "", "idempotency_key"),
        (usd(100), "x" * 129, "idempotency_key"),
    ],
)
async def test_invalid_deposit_is_invalid_argument_with_the_field(
    suite: Suite, amount: money_pb2.Money | None, key: str, field: str
) -> None:
    async with clients(suite) as c:
        account_id = await open_account(c)
        key = f"it-{uuid.uuid4()}" if key == "k" else key
        request = P.CreateDepositRequest(idempotency_key=key, account_id=account_id)
        if amount is not None:
            request.amount.CopyFrom(amount)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await c.payments.CreateDeposit(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (caught.value.details() or "")
    fields, reason = error_details(caught.value)
    assert field in fields
    assert reason == "INVALID_ARGUMENT"
    assert await _payments_for(suite, account_id) == 0


async def test_malformed_account_id_is_invalid_argument(suite: Suite) -> None:
    async with clients(suite) as c:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await c.payments.CreateDeposit(
                P.CreateDepositRequest(idempotency_key="k", account_id="nope", amount=usd(1))
            )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(caught.value)[0] == ["account_id"]


async def test_unknown_account_is_not_found_and_nothing_is_written(suite: Suite) -> None:
    key = f"it-{uuid.uuid4()}"
    async with clients(suite) as c:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await c.payments.CreateDeposit(
                P.CreateDepositRequest(
                    idempotency_key=key, account_id=UNKNOWN_ACCOUNT, amount=usd(100)
                )
            )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert UNKNOWN_ACCOUNT in (caught.value.details() or "")
    assert await _payments_for(suite, UNKNOWN_ACCOUNT) == 0


async def test_currency_other_than_the_accounts_is_invalid(suite: Suite) -> None:
    async with clients(suite) as c:
        account_id = await open_account(c, currency="EUR")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await c.payments.CreateDeposit(
                P.CreateDepositRequest(
                    idempotency_key=f"it-{uuid.uuid4()}", account_id=account_id, amount=usd(1)
                )
            )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(caught.value)[0] == ["amount.currency"]
    assert await _payments_for(suite, account_id) == 0


async def test_reused_key_with_other_amount_is_already_exists(suite: Suite) -> None:
    key = f"it-{uuid.uuid4()}"
    async with clients(suite) as c:
        account_id = await open_account(c)
        request = P.CreateDepositRequest(idempotency_key=key, account_id=account_id, amount=usd(5))
        await c.payments.CreateDeposit(request)
        request.amount.amount_minor = 6
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await c.payments.CreateDeposit(request)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_details(caught.value)[1] == "IDEMPOTENCY_KEY_REUSED"
    assert await _payments_for(suite, account_id) == 1


async def test_unknown_payment_is_not_found(suite: Suite) -> None:
    async with clients(suite) as c:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await c.payments.GetPayment(P.GetPaymentRequest(payment_id=UNKNOWN_ACCOUNT))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert resource_info(caught.value) == ("payment", UNKNOWN_ACCOUNT)


async def test_empty_payment_requests_are_invalid_argument(suite: Suite) -> None:
    async with clients(suite) as c:
        for call, request in (
            (c.payments.CreateWithdrawal, P.CreateWithdrawalRequest()),
            (c.payments.CreateTransfer, P.CreateTransferRequest()),
            (c.payments.RefundPayment, P.RefundPaymentRequest()),
            (c.payments.CancelPayment, P.CancelPaymentRequest()),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(request)  # type: ignore[operator]  # the stub methods in the table share no callable type
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, call
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in c.payments.WatchPayment(P.WatchPaymentRequest()):
                pass
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # payment_id required


async def test_webhook_with_a_wrong_signature_is_401_and_changes_nothing(suite: Suite) -> None:
    body = b'{"id": "evt_forged", "type": "charge.succeeded", "created": 1, "data": {}}'
    headers = {
        "content-type": "application/json",
        "webhook-id": "evt_forged",
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": "v1,Zm9yZ2VkIHNpZ25hdHVyZQ==",
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(suite.webhook_url, data=body, headers=headers) as response,
    ):
        assert response.status == 401
        payload = await response.json()
    assert payload["error"]["code"] == "invalid_signature"
    assert await _gateway_rows(suite, "evt_forged") == 0


async def _payments_for(suite: Suite, account_id: str) -> int:
    engine = db.create_engine(PAYMENT_DB.url(suite.settings), pool_size=1)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(
                text("SELECT count(*) FROM payments WHERE destination_account_id = :a"),
                {"a": account_id},
            )
            return int(result.scalar_one())
    finally:
        await engine.dispose()


async def _gateway_rows(suite: Suite, provider_event_id: str) -> int:
    from gateway_service.bootstrap import DATABASE as GATEWAY_DB

    engine = db.create_engine(GATEWAY_DB.url(suite.settings), pool_size=1)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(
                text("SELECT count(*) FROM provider_events WHERE provider_event_id = :e"),
                {"e": provider_event_id},
            )
            return int(result.scalar_one())
    finally:
        await engine.dispose()


async def test_list_payments_filters_and_refuses_an_empty_time_range(suite: Suite) -> None:
    async with clients(suite) as c:
        account_id = await open_account(c)
        await c.payments.CreateDeposit(
            P.CreateDepositRequest(
                idempotency_key=f"it-{uuid.uuid4()}",
                account_id=account_id,
                amount=usd(7),
                payment_method="pm_card_declined",
            )
        )
        listed = await c.payments.ListPayments(
            P.ListPaymentsRequest(account_id=account_id, kind=P.PAYMENT_KIND_WITHDRAWAL)
        )
        assert list(listed.payments) == []
        request = P.ListPaymentsRequest(account_id=account_id)
        request.created_after.GetCurrentTime()
        request.created_before.FromSeconds(request.created_after.seconds - 60)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await c.payments.ListPayments(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(caught.value)[0] == ["created_before"]

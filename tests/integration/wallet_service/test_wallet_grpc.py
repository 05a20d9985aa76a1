"""The wallet over real gRPC and PostgreSQL: each operation_ref has at most one effect
(invariant 5), also when the same request races itself."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from paysuite.wallet.v1 import wallet_pb2
from tests.conftest import Suite
from tests.integration.helpers import clients, error_details, open_account, usd

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]
W = wallet_pb2


async def test_open_account_is_idempotent_on_owner_and_ref(suite: Suite) -> None:
    ref = str(uuid.uuid4())
    request = W.OpenAccountRequest(operation_ref=ref, owner_id="bob", currency="EUR")
    async with clients(suite) as c:
        first, second = await asyncio.gather(
            c.wallet.OpenAccount(request), c.wallet.OpenAccount(request)
        )
    assert first.account_id == second.account_id
    assert first.balance.available.currency == "EUR"


async def test_racing_credits_with_one_ref_move_money_once(suite: Suite) -> None:
    async with clients(suite) as c:
        account_id = await open_account(c)
        request = W.CreditRequest(
            operation_ref=str(uuid.uuid4()), account_id=account_id, amount=usd(250)
        )
        results = await asyncio.gather(*(c.wallet.Credit(request) for _ in range(10)))
        assert len({r.transaction_id for r in results}) == 1
        balance = await c.wallet.GetBalance(W.GetBalanceRequest(account_id=account_id))
    assert balance.total == usd(250)


async def test_concurrent_credits_with_distinct_refs_all_apply(suite: Suite) -> None:
    async with clients(suite) as c:
        account_id = await open_account(c)
        await asyncio.gather(
            *(
                c.wallet.Credit(
                    W.CreditRequest(
                        operation_ref=str(uuid.uuid4()), account_id=account_id, amount=usd(3)
                    )
                )
                for _ in range(20)
            )
        )
        balance = await c.wallet.GetBalance(W.GetBalanceRequest(account_id=account_id))
        entries = await c.wallet.ListEntries(W.ListEntriesRequest(account_id=account_id))
    assert balance.total == usd(60)
    assert len(entries.entries) == 20


async def test_a_ref_reused_for_another_amount_is_refused(suite: Suite) -> None:
    ref = str(uuid.uuid4())
    async with clients(suite) as c:
        account_id = await open_account(c)
        await c.wallet.Credit(
            W.CreditRequest(operation_ref=ref, account_id=account_id, amount=usd(5))
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await c.wallet.Credit(
                W.CreditRequest(operation_ref=ref, account_id=account_id, amount=usd(6))
            )
        balance = await c.wallet.GetBalance(W.GetBalanceRequest(account_id=account_id))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_details(caught.value)[1] == "OPERATION_REF_REUSED"
    assert balance.total == usd(5)


async def test_debit_beyond_the_balance_is_failed_precondition(suite: Suite) -> None:
    async with clients(suite) as c:
        account_id = await open_account(c)
        await c.wallet.Credit(
            W.CreditRequest(operation_ref=str(uuid.uuid4()), account_id=account_id, amount=usd(5))
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await c.wallet.Debit(
                W.DebitRequest(
                    operation_ref=str(uuid.uuid4()), account_id=account_id, amount=usd(6)
                )
            )
        balance = await c.wallet.GetBalance(W.GetBalanceRequest(account_id=account_id))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(caught.value)[1] == "INSUFFICIENT_FUNDS"
    assert balance.total == usd(5)

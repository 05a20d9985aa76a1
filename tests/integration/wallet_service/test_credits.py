"""Credits on a real wallet over a real gRPC socket (the suite's PostgreSQL): each credit of a
batch is answered on its own, as a Credit of its own would have been."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from paysuite.wallet.v1 import wallet_pb2
from tests.conftest import Suite
from tests.integration.helpers import clients, open_account, usd

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

W = wallet_pb2
OK = grpc.StatusCode.OK.value[0]


def _status(exc: grpc.aio.AioRpcError) -> status_pb2.Status:
    raw = dict(exc.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert isinstance(raw, bytes)
    return status_pb2.Status.FromString(raw)


def _without_request_id(status: status_pb2.Status) -> status_pb2.Status:
    """The status with its ErrorInfo's request id dropped (each call has its own)."""
    copy = status_pb2.Status()
    copy.CopyFrom(status)
    for detail in copy.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            del info.metadata["request_id"]
            detail.Pack(info)
    return copy


async def test_each_credit_of_a_batch_gets_its_own_answer(suite: Suite) -> None:
    run = uuid.uuid4().hex[:8]
    async with clients(suite) as c:
        account_id = await open_account(c)
        # A unary Credit, asked again in the batch: the same transaction, credited once.
        earlier = await c.wallet.Credit(
            W.CreditRequest(operation_ref=f"{run}-earlier", account_id=account_id, amount=usd(100))
        )

        def credit(operation_ref: str, amount_minor: int = 250) -> W.CreditRequest:
            return W.CreditRequest(
                operation_ref=operation_ref, account_id=account_id, amount=usd(amount_minor)
            )

        invalid = W.CreditRequest(operation_ref=f"{run}-invalid", account_id=account_id)
        # What Credit says of the invalid credit alone: the batch must say the same of it.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await c.wallet.Credit(invalid)

        response = await c.wallet.Credits(
            W.CreditsRequest(
                credits=[
                    credit(f"{run}-new"),
                    invalid,
                    credit(f"{run}-earlier", 100),
                    credit(f"{run}-earlier", 999),  # the ref reused for another amount
                    credit(f"{run}-new"),
                ]
            ),
            timeout=10.0,
        )
        balance = await c.wallet.GetBalance(W.GetBalanceRequest(account_id=account_id))

    new, bad, repeat, conflict, new_again = response.results
    assert [r.status.code for r in response.results] == [
        OK,
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
        OK,
        grpc.StatusCode.ALREADY_EXISTS.value[0],
        OK,
    ]
    assert new.transaction.operation_ref == f"{run}-new"
    assert new_again.transaction.transaction_id == new.transaction.transaction_id
    assert repeat.transaction.transaction_id == earlier.transaction_id

    # The invalid credit's answer is what Credit answered: code, message and details.
    assert not bad.HasField("transaction")
    assert bad.status.code == caught.value.code().value[0]
    assert bad.status.message == caught.value.details()
    assert _without_request_id(bad.status) == _without_request_id(_status(caught.value))
    violations = error_details_pb2.BadRequest()
    assert any(d.Unpack(violations) for d in bad.status.details)
    assert [v.field for v in violations.field_violations] == ["amount"]
    info = error_details_pb2.ErrorInfo()
    assert any(d.Unpack(info) for d in conflict.status.details)
    assert info.reason == "OPERATION_REF_REUSED"
    assert not conflict.HasField("transaction")
    # ... and only its answers carry details.
    assert all(not r.status.details for r in (new, repeat, new_again))

    # Each credit had its effect once: 1.00 earlier, 2.50 new; nothing from the others.
    assert balance.available.amount_minor == 350


async def test_an_empty_batch_is_an_empty_answer(suite: Suite) -> None:
    async with clients(suite) as c:
        response = await c.wallet.Credits(W.CreditsRequest(), timeout=10.0)
    assert list(response.results) == []


@pytest.mark.parametrize(
    "case",
    ["no amount", "unknown currency", "no ref", "ref reused", "unknown account", "other currency"],
)
async def test_a_credit_in_a_batch_fails_as_credit_would(suite: Suite, case: str) -> None:
    """One table: a batch item's status is the unary call's, code, message and details."""
    run = uuid.uuid4().hex[:8]
    async with clients(suite) as c:
        account_id = await open_account(c)
        request = W.CreditRequest(operation_ref=f"{run}-c", account_id=account_id, amount=usd(5))
        if case == "no amount":
            request.ClearField("amount")
        elif case == "unknown currency":
            request.amount.currency = "XXX"
        elif case == "no ref":
            request.operation_ref = ""
        elif case == "ref reused":
            await c.wallet.Credit(request)
            request.amount.amount_minor = 6
        elif case == "unknown account":
            request.account_id = str(uuid.uuid4())
        else:  # a EUR credit to a USD account: FAILED_PRECONDITION, CURRENCY_MISMATCH
            request.amount.currency = "EUR"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await c.wallet.Credit(request)

        response = await c.wallet.Credits(W.CreditsRequest(credits=[request]), timeout=10.0)

    (result,) = response.results
    assert result.status.code == caught.value.code().value[0]
    assert result.status.message == caught.value.details()
    assert _without_request_id(result.status) == _without_request_id(_status(caught.value))
    assert not result.HasField("transaction")

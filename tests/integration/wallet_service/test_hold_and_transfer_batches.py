"""PlaceHolds, CaptureHolds and Transfers on a real wallet over a real gRPC socket (the suite's
PostgreSQL): each item of a batch is answered on its own, as its unary call (PlaceHold,
CaptureHold, Transfer) would have answered it; a refusal such as insufficient funds is that
item's status, never the batch's."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from paysuite.wallet.v1 import wallet_pb2
from tests.conftest import Suite
from tests.integration.helpers import Clients, clients, open_account, usd
from wallet_service.service_layer.services import WalletService

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

W = wallet_pb2
OK = grpc.StatusCode.OK.value[0]
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION.value[0]


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


def _reason(status: status_pb2.Status) -> str:
    info = error_details_pb2.ErrorInfo()
    assert any(d.Unpack(info) for d in status.details)
    return str(info.reason)


async def _funded(c: Clients, amount_minor: int) -> str:
    account_id = await open_account(c)
    await c.wallet.Credit(
        W.CreditRequest(
            operation_ref=str(uuid.uuid4()), account_id=account_id, amount=usd(amount_minor)
        )
    )
    return account_id


async def _balance(c: Clients, account_id: str) -> W.Balance:
    return await c.wallet.GetBalance(W.GetBalanceRequest(account_id=account_id))


def _same_as_unary(result_status: status_pb2.Status, caught: grpc.aio.AioRpcError) -> None:
    """An item's status is what the unary call failed with: code, message and details."""
    assert result_status.code == caught.code().value[0]
    assert result_status.message == caught.details()
    assert _without_request_id(result_status) == _without_request_id(_status(caught))


# --- PlaceHolds ------------------------------------------------------------------------------


async def test_each_hold_of_a_batch_gets_its_own_answer(suite: Suite) -> None:
    run = uuid.uuid4().hex[:8]
    async with clients(suite) as c:
        account_id = await _funded(c, 1000)
        # A unary PlaceHold, asked again in the batch: the same hold, placed once.
        earlier = await c.wallet.PlaceHold(
            W.PlaceHoldRequest(
                operation_ref=f"{run}-earlier", account_id=account_id, amount=usd(100)
            )
        )

        def hold(operation_ref: str, amount_minor: int = 250) -> W.PlaceHoldRequest:
            return W.PlaceHoldRequest(
                operation_ref=operation_ref,
                account_id=account_id,
                amount=usd(amount_minor),
                reference=operation_ref,
            )

        invalid = W.PlaceHoldRequest(operation_ref=f"{run}-invalid", account_id=account_id)
        # What PlaceHold says of the invalid hold alone: the batch must say the same of it.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await c.wallet.PlaceHold(invalid)

        response = await c.wallet.PlaceHolds(
            W.PlaceHoldsRequest(
                holds=[
                    hold(f"{run}-new"),
                    invalid,
                    W.PlaceHoldRequest(
                        operation_ref=f"{run}-earlier", account_id=account_id, amount=usd(100)
                    ),
                    hold(f"{run}-earlier", 999),  # the ref reused for another amount
                    hold(f"{run}-too-much", 5000),  # more than is available: refused alone
                    hold(f"{run}-new"),
                ]
            ),
            timeout=10.0,
        )
        balance = await _balance(c, account_id)

    new, bad, repeat, conflict, too_much, new_again = response.results
    assert [r.status.code for r in response.results] == [
        OK,
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
        OK,
        grpc.StatusCode.ALREADY_EXISTS.value[0],
        FAILED_PRECONDITION,
        OK,
    ]
    assert (new.hold.status, new.hold.amount, new.hold.reference) == (
        "open",
        usd(250),
        f"{run}-new",
    )
    assert new_again.hold.hold_id == new.hold.hold_id
    assert repeat.hold.hold_id == earlier.hold_id

    assert not bad.HasField("hold")
    _same_as_unary(bad.status, caught.value)
    assert _reason(conflict.status) == "OPERATION_REF_REUSED"
    assert _reason(too_much.status) == "INSUFFICIENT_FUNDS"
    assert not conflict.HasField("hold")
    assert not too_much.HasField("hold")
    assert all(not r.status.details for r in (new, repeat, new_again))

    # Each hold held its money once: 1.00 earlier, 2.50 new; nothing from the others.
    assert (balance.available, balance.held, balance.total) == (usd(650), usd(350), usd(1000))


# --- CaptureHolds ----------------------------------------------------------------------------


async def test_each_capture_of_a_batch_gets_its_own_answer(suite: Suite) -> None:
    run = uuid.uuid4().hex[:8]
    async with clients(suite) as c:
        account_id = await _funded(c, 1000)
        holds = []
        for n in range(3):
            holds.append(
                await c.wallet.PlaceHold(
                    W.PlaceHoldRequest(
                        operation_ref=f"{run}-hold-{n}", account_id=account_id, amount=usd(100)
                    )
                )
            )
        # A unary CaptureHold, asked again in the batch: the same transaction, captured once.
        earlier = await c.wallet.CaptureHold(
            W.CaptureHoldRequest(operation_ref=f"{run}-earlier", hold_id=holds[0].hold_id)
        )

        def capture(operation_ref: str, hold_id: str) -> W.CaptureHoldRequest:
            return W.CaptureHoldRequest(operation_ref=operation_ref, hold_id=hold_id)

        response = await c.wallet.CaptureHolds(
            W.CaptureHoldsRequest(
                captures=[
                    capture(f"{run}-new", holds[1].hold_id),
                    capture(f"{run}-earlier", holds[0].hold_id),
                    # A capture of a hold already captured under another ref: HOLD_NOT_OPEN.
                    capture(f"{run}-again", holds[0].hold_id),
                    capture(f"{run}-unknown", str(uuid.uuid4())),
                    W.CaptureHoldRequest(
                        operation_ref=f"{run}-partial", hold_id=holds[2].hold_id, amount=usd(40)
                    ),
                ]
            ),
            timeout=10.0,
        )
        balance = await _balance(c, account_id)

    new, repeat, not_open, unknown, partial = response.results
    assert [r.status.code for r in response.results] == [
        OK,
        OK,
        FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND.value[0],
        OK,
    ]
    assert (new.transaction.operation_ref, new.transaction.kind) == (f"{run}-new", "capture")
    assert repeat.transaction.transaction_id == earlier.transaction_id
    assert _reason(not_open.status) == "HOLD_NOT_OPEN"
    assert not not_open.HasField("transaction")
    assert not unknown.HasField("transaction")
    assert all(not r.status.details for r in (new, repeat, partial))
    # 1.00 + 1.00 + 0.40 captured, the partial's other 0.60 released.
    assert (balance.available, balance.held, balance.total) == (usd(760), usd(0), usd(760))


# --- Transfers -------------------------------------------------------------------------------


async def test_each_transfer_of_a_batch_gets_its_own_answer(
    suite: Suite, rates: WalletService
) -> None:
    run = uuid.uuid4().hex[:8]
    async with clients(suite) as c:
        source, destination = await _funded(c, 1000), await open_account(c)
        euros = await open_account(c, "EUR")
        earlier = await c.wallet.Transfer(
            W.TransferRequest(
                operation_ref=f"{run}-earlier",
                source_account_id=source,
                destination_account_id=destination,
                amount=usd(100),
            )
        )

        def transfer(
            operation_ref: str, amount_minor: int = 250, to: str = destination
        ) -> W.TransferRequest:
            return W.TransferRequest(
                operation_ref=operation_ref,
                source_account_id=source,
                destination_account_id=to,
                amount=usd(amount_minor),
                reference=operation_ref,
            )

        invalid = W.TransferRequest(
            operation_ref=f"{run}-invalid",
            source_account_id=source,
            destination_account_id=destination,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await c.wallet.Transfer(invalid)

        response = await c.wallet.Transfers(
            W.TransfersRequest(
                transfers=[
                    transfer(f"{run}-new"),
                    invalid,
                    transfer(f"{run}-earlier", 100),
                    transfer(f"{run}-earlier", 999),
                    transfer(f"{run}-too-much", 5000),
                    transfer(f"{run}-fx", 100, to=euros),
                    transfer(f"{run}-new"),
                ]
            ),
            timeout=10.0,
        )
        src, dst = await _balance(c, source), await _balance(c, destination)
        eur = await _balance(c, euros)

    new, bad, repeat, conflict, too_much, fx, new_again = response.results
    assert [r.status.code for r in response.results] == [
        OK,
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
        OK,
        grpc.StatusCode.ALREADY_EXISTS.value[0],
        FAILED_PRECONDITION,
        OK,
        OK,
    ]
    assert new.transaction.operation_ref == f"{run}-new"
    assert new_again.transaction.transaction_id == new.transaction.transaction_id
    assert repeat.transaction.transaction_id == earlier.transaction_id
    assert fx.transaction.conversion.rate == "0.9215"
    assert not bad.HasField("transaction")
    _same_as_unary(bad.status, caught.value)
    assert _reason(conflict.status) == "OPERATION_REF_REUSED"
    assert _reason(too_much.status) == "INSUFFICIENT_FUNDS"
    assert all(not r.status.details for r in (new, repeat, fx, new_again))
    # Each transfer moved its money once: 1.00 earlier, 2.50 new, 1.00 to EUR (0.92).
    assert (src.total, dst.total) == (usd(550), usd(350))
    assert eur.total.amount_minor == 92


# --- All three: empty batches, and each failure kind as the unary call's ---------------------


async def test_empty_batches_are_empty_answers(suite: Suite) -> None:
    async with clients(suite) as c:
        holds = await c.wallet.PlaceHolds(W.PlaceHoldsRequest(), timeout=10.0)
        captures = await c.wallet.CaptureHolds(W.CaptureHoldsRequest(), timeout=10.0)
        transfers = await c.wallet.Transfers(W.TransfersRequest(), timeout=10.0)
    assert list(holds.results) == list(captures.results) == list(transfers.results) == []


Unary = Callable[[Any], Awaitable[Any]]


async def _parity(request: Any, unary: Unary, batch: Unary) -> None:
    """The one request fails alone (unary) and in a batch of one with the same status."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await unary(request)
    (result,) = (await batch(request)).results
    _same_as_unary(result.status, caught.value)
    assert result.status.code != OK


@pytest.mark.parametrize(
    "case",
    [
        "no amount",
        "unknown currency",
        "no ref",
        "ref reused",
        "unknown account",
        "other currency",
        "insufficient funds",
        "frozen",
    ],
)
async def test_a_hold_in_a_batch_fails_as_place_hold_would(suite: Suite, case: str) -> None:
    run = uuid.uuid4().hex[:8]
    async with clients(suite) as c:
        account_id = await _funded(c, 100)
        request = W.PlaceHoldRequest(operation_ref=f"{run}-h", account_id=account_id, amount=usd(5))
        if case == "no amount":
            request.ClearField("amount")
        elif case == "unknown currency":
            request.amount.currency = "XXX"
        elif case == "no ref":
            request.operation_ref = ""
        elif case == "ref reused":
            await c.wallet.PlaceHold(request)
            request.amount.amount_minor = 6
        elif case == "unknown account":
            request.account_id = str(uuid.uuid4())
        elif case == "other currency":
            request.amount.currency = "EUR"
        elif case == "insufficient funds":
            request.amount.amount_minor = 101
        else:
            await c.wallet.FreezeAccount(
                W.AccountStatusRequest(operation_ref=f"{run}-f", account_id=account_id)
            )
        await _parity(
            request,
            c.wallet.PlaceHold,
            lambda r: c.wallet.PlaceHolds(W.PlaceHoldsRequest(holds=[r]), timeout=10.0),
        )
        # Nothing held by either attempt (but the first hold of "ref reused").
        held = (await _balance(c, account_id)).held
        assert held == usd(5 if case == "ref reused" else 0)


@pytest.mark.parametrize(
    "case", ["no ref", "unknown hold", "ref reused", "not open", "more than held", "other currency"]
)
async def test_a_capture_in_a_batch_fails_as_capture_hold_would(suite: Suite, case: str) -> None:
    run = uuid.uuid4().hex[:8]
    async with clients(suite) as c:
        account_id = await _funded(c, 100)
        hold = await c.wallet.PlaceHold(
            W.PlaceHoldRequest(operation_ref=f"{run}-h", account_id=account_id, amount=usd(50))
        )
        request = W.CaptureHoldRequest(operation_ref=f"{run}-c", hold_id=hold.hold_id)
        if case == "no ref":
            request.operation_ref = ""
        elif case == "unknown hold":
            request.hold_id = str(uuid.uuid4())
        elif case == "ref reused":
            await c.wallet.CaptureHold(request)
            request.amount.CopyFrom(usd(10))
        elif case == "not open":
            await c.wallet.ReleaseHold(
                W.ReleaseHoldRequest(operation_ref=f"{run}-r", hold_id=hold.hold_id)
            )
        elif case == "more than held":
            request.amount.CopyFrom(usd(51))
        else:
            request.amount.CopyFrom(usd(10))
            request.amount.currency = "EUR"
        await _parity(
            request,
            c.wallet.CaptureHold,
            lambda r: c.wallet.CaptureHolds(W.CaptureHoldsRequest(captures=[r]), timeout=10.0),
        )


@pytest.mark.parametrize(
    "case",
    [
        "no amount",
        "no ref",
        "ref reused",
        "unknown source",
        "unknown destination",
        "insufficient funds",
        "no rate",
        "same account",
    ],
)
async def test_a_transfer_in_a_batch_fails_as_transfer_would(
    suite: Suite, rates: WalletService, case: str
) -> None:
    run = uuid.uuid4().hex[:8]
    async with clients(suite) as c:
        source, destination = await _funded(c, 100), await open_account(c)
        request = W.TransferRequest(
            operation_ref=f"{run}-t",
            source_account_id=source,
            destination_account_id=destination,
            amount=usd(5),
        )
        if case == "no amount":
            request.ClearField("amount")
        elif case == "no ref":
            request.operation_ref = ""
        elif case == "ref reused":
            await c.wallet.Transfer(request)
            request.amount.amount_minor = 6
        elif case == "unknown source":
            request.source_account_id = str(uuid.uuid4())
        elif case == "unknown destination":
            request.destination_account_id = str(uuid.uuid4())
        elif case == "insufficient funds":
            request.amount.amount_minor = 101
        elif case == "no rate":  # USD -> CHF: the rate the fixture leaves out
            request.destination_account_id = await open_account(c, "CHF")
        else:
            request.destination_account_id = source
        await _parity(
            request,
            c.wallet.Transfer,
            lambda r: c.wallet.Transfers(W.TransfersRequest(transfers=[r]), timeout=10.0),
        )

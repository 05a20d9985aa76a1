"""The wallet over real gRPC and PostgreSQL: each operation_ref has at most one effect
(invariant 5), also when the same request races itself; holds, transfers, FX, lifecycle,
limits and the errors callers switch on."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from paysuite.common.v1 import money_pb2
from paysuite.wallet.v1 import wallet_pb2
from tests.conftest import Suite
from tests.integration.helpers import Clients, clients, error_details, open_account, usd
from wallet_service.service_layer.services import WalletService

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]
W = wallet_pb2


def ref() -> str:
    return str(uuid.uuid4())


def money(amount_minor: int, currency: str) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=amount_minor, currency=currency)


async def funded(c: Clients, amount_minor: int, currency: str = "USD") -> str:
    account_id = await open_account(c, currency)
    await c.wallet.Credit(
        W.CreditRequest(
            operation_ref=ref(), account_id=account_id, amount=money(amount_minor, currency)
        )
    )
    return account_id


async def balance(c: Clients, account_id: str) -> W.Balance:
    return await c.wallet.GetBalance(W.GetBalanceRequest(account_id=account_id))


async def refused(call: Awaitable[object]) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    _, reason = error_details(caught.value)
    return caught.value.code(), reason, _metadata(caught.value)


def _metadata(exc: grpc.aio.AioRpcError) -> dict[str, str]:
    from google.rpc import error_details_pb2, status_pb2

    raw = dict(exc.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert isinstance(raw, bytes)
    for detail in status_pb2.Status.FromString(raw).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return dict(info.metadata)
    return {}


async def test_open_account_is_idempotent_on_owner_and_ref(suite: Suite) -> None:
    request = W.OpenAccountRequest(operation_ref=ref(), owner_id="bob", currency="EUR")
    async with clients(suite) as c:
        first, second = await asyncio.gather(
            c.wallet.OpenAccount(request), c.wallet.OpenAccount(request)
        )
    assert first.account_id == second.account_id
    assert first.balance.available.currency == "EUR"
    assert first.status == W.ACCOUNT_STATUS_OPEN


async def test_open_account_ref_reused_for_another_currency_is_refused(suite: Suite) -> None:
    operation_ref = ref()
    async with clients(suite) as c:
        await c.wallet.OpenAccount(
            W.OpenAccountRequest(operation_ref=operation_ref, owner_id="eve", currency="USD")
        )
        code, reason, _ = await refused(
            c.wallet.OpenAccount(
                W.OpenAccountRequest(operation_ref=operation_ref, owner_id="eve", currency="EUR")
            )
        )
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "OPERATION_REF_REUSED")


async def test_racing_credits_with_one_ref_move_money_once(suite: Suite) -> None:
    async with clients(suite) as c:
        account_id = await open_account(c)
        request = W.CreditRequest(operation_ref=ref(), account_id=account_id, amount=usd(250))
        results = await asyncio.gather(*(c.wallet.Credit(request) for _ in range(10)))
        assert len({r.transaction_id for r in results}) == 1
        assert (await balance(c, account_id)).total == usd(250)


async def test_concurrent_credits_with_distinct_refs_all_apply(suite: Suite) -> None:
    async with clients(suite) as c:
        account_id = await open_account(c)
        await asyncio.gather(
            *(
                c.wallet.Credit(
                    W.CreditRequest(operation_ref=ref(), account_id=account_id, amount=usd(3))
                )
                for _ in range(20)
            )
        )
        entries = await c.wallet.ListEntries(W.ListEntriesRequest(account_id=account_id))
        assert (await balance(c, account_id)).total == usd(60)
    assert len(entries.entries) == 20
    assert [e.balance_after.amount_minor for e in entries.entries] == list(range(3, 61, 3))


async def test_a_ref_reused_for_another_amount_is_refused(suite: Suite) -> None:
    operation_ref = ref()
    async with clients(suite) as c:
        account_id = await open_account(c)
        await c.wallet.Credit(
            W.CreditRequest(operation_ref=operation_ref, account_id=account_id, amount=usd(5))
        )
        code, reason, _ = await refused(
            c.wallet.Credit(
                W.CreditRequest(operation_ref=operation_ref, account_id=account_id, amount=usd(6))
            )
        )
        # The same ref for another kind of operation is a reuse too.
        code2, reason2, _ = await refused(
            c.wallet.Debit(
                W.DebitRequest(operation_ref=operation_ref, account_id=account_id, amount=usd(5))
            )
        )
        assert (await balance(c, account_id)).total == usd(5)
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "OPERATION_REF_REUSED")
    assert (code2, reason2) == (grpc.StatusCode.ALREADY_EXISTS, "OPERATION_REF_REUSED")


async def test_debit_beyond_the_balance_carries_the_available_amount(suite: Suite) -> None:
    async with clients(suite) as c:
        account_id = await funded(c, 5)
        code, reason, metadata = await refused(
            c.wallet.Debit(
                W.DebitRequest(operation_ref=ref(), account_id=account_id, amount=usd(6))
            )
        )
        assert (await balance(c, account_id)).total == usd(5)
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    assert metadata["available_minor"] == "5"
    assert metadata["currency"] == "USD"


async def test_debit_repeated_returns_the_first_result(suite: Suite) -> None:
    async with clients(suite) as c:
        account_id = await funded(c, 100)
        request = W.DebitRequest(operation_ref=ref(), account_id=account_id, amount=usd(40))
        first = await c.wallet.Debit(request)
        second = await c.wallet.Debit(request)
        assert (await balance(c, account_id)).total == usd(60)
    assert first == second


async def test_hold_then_partial_capture_releases_the_rest(suite: Suite) -> None:
    async with clients(suite) as c:
        account_id = await funded(c, 100)
        hold = await c.wallet.PlaceHold(
            W.PlaceHoldRequest(
                operation_ref=ref(), account_id=account_id, amount=usd(70), reference="pay-1"
            )
        )
        held = await balance(c, account_id)
        code, reason, _ = await refused(
            c.wallet.Debit(
                W.DebitRequest(operation_ref=ref(), account_id=account_id, amount=usd(31))
            )
        )
        txn = await c.wallet.CaptureHold(
            W.CaptureHoldRequest(operation_ref=ref(), hold_id=hold.hold_id, amount=usd(50))
        )
        after = await balance(c, account_id)
        closed = await c.wallet.GetHold(W.GetHoldRequest(hold_id=hold.hold_id))
        code2, reason2, _ = await refused(
            c.wallet.ReleaseHold(W.ReleaseHoldRequest(operation_ref=ref(), hold_id=hold.hold_id))
        )
    assert hold.status == "open"
    assert hold.reference == "pay-1"
    assert (held.available, held.held, held.total) == (usd(30), usd(70), usd(100))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_FUNDS")
    assert txn.kind == "capture"
    assert (after.available, after.held, after.total) == (usd(50), usd(0), usd(50))
    assert (closed.status, closed.captured) == ("captured", usd(50))
    assert (code2, reason2) == (grpc.StatusCode.FAILED_PRECONDITION, "HOLD_NOT_OPEN")


async def test_release_gives_the_money_back_and_repeats_idempotently(suite: Suite) -> None:
    async with clients(suite) as c:
        account_id = await funded(c, 100)
        hold = await c.wallet.PlaceHold(
            W.PlaceHoldRequest(operation_ref=ref(), account_id=account_id, amount=usd(100))
        )
        request = W.ReleaseHoldRequest(operation_ref=ref(), hold_id=hold.hold_id)
        first, second = await c.wallet.ReleaseHold(request), await c.wallet.ReleaseHold(request)
        after = await balance(c, account_id)
    assert first == second
    assert first.status == "released"
    assert (after.available, after.held) == (usd(100), usd(0))


async def test_a_capture_or_release_naming_the_account_answers_as_without_it(
    suite: Suite,
) -> None:
    """The hold's account named (as the payment service does, to spare the wallet a read of
    the hold) or named wrongly: the same answers, refusals included, as without it."""
    async with clients(suite) as c:
        account_id, other = await funded(c, 100), await funded(c, 100)

        async def hold(amount: int) -> W.Hold:
            return await c.wallet.PlaceHold(
                W.PlaceHoldRequest(operation_ref=ref(), account_id=account_id, amount=usd(amount))
            )

        captured, released, wrong = await hold(30), await hold(20), await hold(10)
        capture = W.CaptureHoldRequest(
            operation_ref=ref(), hold_id=captured.hold_id, account_id=account_id
        )
        txn, again = await c.wallet.CaptureHold(capture), await c.wallet.CaptureHold(capture)
        view = await c.wallet.ReleaseHold(
            W.ReleaseHoldRequest(
                operation_ref=ref(), hold_id=released.hold_id, account_id=account_id
            )
        )
        # On another account, or on none that exists: read and decided on its own account.
        misnamed = await c.wallet.CaptureHold(
            W.CaptureHoldRequest(operation_ref=ref(), hold_id=wrong.hold_id, account_id=other)
        )
        closed = await refused(
            c.wallet.ReleaseHold(
                W.ReleaseHoldRequest(
                    operation_ref=ref(), hold_id=wrong.hold_id, account_id=str(uuid.uuid4())
                )
            )
        )
        unknown = await refused(
            c.wallet.CaptureHold(
                W.CaptureHoldRequest(
                    operation_ref=ref(), hold_id=str(uuid.uuid4()), account_id=account_id
                )
            )
        )
        after, untouched = await balance(c, account_id), await balance(c, other)
    assert txn == again
    assert txn.kind == "capture"
    assert (view.status, view.amount, view.captured) == ("released", usd(20), usd(0))
    assert (view.account_id, view.hold_id) == (account_id, released.hold_id)
    assert misnamed.kind == "capture"
    assert closed[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "HOLD_NOT_OPEN")
    assert unknown[0] == grpc.StatusCode.NOT_FOUND
    assert (after.available, after.held, after.total) == (usd(60), usd(0), usd(60))
    assert (untouched.available, untouched.total) == (usd(100), usd(100))


async def test_expired_holds_are_swept(suite: Suite) -> None:
    async with clients(suite) as c:
        account_id = await funded(c, 100)
        soon = Timestamp()
        soon.FromDatetime(datetime.now(UTC) + timedelta(milliseconds=300))
        hold = await c.wallet.PlaceHold(
            W.PlaceHoldRequest(
                operation_ref=ref(), account_id=account_id, amount=usd(60), expires_at=soon
            )
        )
        await asyncio.sleep(0.4)
        swept = await c.wallet.ExpireHolds(W.ExpireHoldsRequest())
        view = await c.wallet.GetHold(W.GetHoldRequest(hold_id=hold.hold_id))
        after = await balance(c, account_id)
    # The service's own sweep may have been first; either way the hold is expired once.
    assert view.status == "expired"
    assert hold.hold_id in swept.expired_hold_ids or not swept.expired_hold_ids
    assert after.available == usd(100)


async def test_transfer_in_one_currency_with_a_fee(suite: Suite) -> None:
    async with clients(suite) as c:
        source, destination = await funded(c, 100), await open_account(c)
        txn = await c.wallet.Transfer(
            W.TransferRequest(
                operation_ref=ref(),
                source_account_id=source,
                destination_account_id=destination,
                amount=usd(40),
                fee=usd(1),
                reference="rent",
            )
        )
        src, dst = await balance(c, source), await balance(c, destination)
    assert (src.total, dst.total) == (usd(59), usd(40))
    assert sum(e.amount.amount_minor for e in txn.entries) == 0
    assert not txn.HasField("conversion")


async def test_transfer_across_currencies_reports_the_conversion(
    suite: Suite, rates: WalletService
) -> None:
    async with clients(suite) as c:
        source, destination = await funded(c, 1000), await open_account(c, "EUR")
        txn = await c.wallet.Transfer(
            W.TransferRequest(
                operation_ref=ref(),
                source_account_id=source,
                destination_account_id=destination,
                amount=usd(1000),
            )
        )
        dst = await balance(c, destination)
    assert txn.conversion.rate == "0.9215"
    assert txn.conversion.rate_source == "test"
    assert txn.conversion.source_amount == usd(1000)
    # 10.00 USD * 0.9215 = 9.215 EUR: a tie at the cent, rounded half to even.
    assert txn.conversion.target_amount == money(922, "EUR")
    assert dst.total == money(922, "EUR")


async def test_transfer_without_a_rate_is_failed_precondition(
    suite: Suite, rates: WalletService
) -> None:
    async with clients(suite) as c:
        source, destination = await funded(c, 100), await open_account(c, "CHF")
        code, reason, _ = await refused(
            c.wallet.Transfer(
                W.TransferRequest(
                    operation_ref=ref(),
                    source_account_id=source,
                    destination_account_id=destination,
                    amount=usd(10),
                )
            )
        )
        assert (await balance(c, source)).total == usd(100)
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "FX_RATE_UNAVAILABLE")


async def test_a_frozen_account_refuses_money_out_but_takes_credits(suite: Suite) -> None:
    async with clients(suite) as c:
        account_id, other = await funded(c, 100), await open_account(c)
        frozen = await c.wallet.FreezeAccount(
            W.AccountStatusRequest(operation_ref=ref(), account_id=account_id)
        )
        refusals = [
            await refused(
                c.wallet.Debit(
                    W.DebitRequest(operation_ref=ref(), account_id=account_id, amount=usd(1))
                )
            ),
            await refused(
                c.wallet.PlaceHold(
                    W.PlaceHoldRequest(operation_ref=ref(), account_id=account_id, amount=usd(1))
                )
            ),
            await refused(
                c.wallet.Transfer(
                    W.TransferRequest(
                        operation_ref=ref(),
                        source_account_id=account_id,
                        destination_account_id=other,
                        amount=usd(1),
                    )
                )
            ),
        ]
        await c.wallet.Credit(
            W.CreditRequest(operation_ref=ref(), account_id=account_id, amount=usd(5))
        )
        await c.wallet.Transfer(
            W.TransferRequest(
                operation_ref=ref(),
                source_account_id=await funded(c, 10),
                destination_account_id=account_id,
                amount=usd(10),
            )
        )
        thawed = await c.wallet.UnfreezeAccount(
            W.AccountStatusRequest(operation_ref=ref(), account_id=account_id)
        )
        await c.wallet.Debit(
            W.DebitRequest(operation_ref=ref(), account_id=account_id, amount=usd(1))
        )
        after = await balance(c, account_id)
    assert frozen.status == W.ACCOUNT_STATUS_FROZEN
    assert {(code, reason) for code, reason, _ in refusals} == {
        (grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_FROZEN")
    }
    assert thawed.status == W.ACCOUNT_STATUS_OPEN
    assert after.total == usd(114)


async def test_only_an_empty_account_closes(suite: Suite) -> None:
    async with clients(suite) as c:
        account_id = await funded(c, 10)
        code, reason, _ = await refused(
            c.wallet.CloseAccount(
                W.AccountStatusRequest(operation_ref=ref(), account_id=account_id)
            )
        )
        await c.wallet.Debit(
            W.DebitRequest(operation_ref=ref(), account_id=account_id, amount=usd(10))
        )
        closed = await c.wallet.CloseAccount(
            W.AccountStatusRequest(operation_ref=ref(), account_id=account_id)
        )
        code2, reason2, _ = await refused(
            c.wallet.Credit(
                W.CreditRequest(operation_ref=ref(), account_id=account_id, amount=usd(1))
            )
        )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_NOT_EMPTY")
    assert closed.status == W.ACCOUNT_STATUS_CLOSED
    assert (code2, reason2) == (grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_CLOSED")


async def test_a_credit_past_64_bits_is_limit_exceeded_not_internal(suite: Suite) -> None:
    async with clients(suite) as c:
        account_id = await funded(c, 2**63 - 1)
        code, reason, _ = await refused(
            c.wallet.Credit(
                W.CreditRequest(operation_ref=ref(), account_id=account_id, amount=usd(1))
            )
        )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "LIMIT_EXCEEDED")


async def test_list_entries_pages_with_running_balances(suite: Suite) -> None:
    async with clients(suite) as c:
        account_id = await funded(c, 10)
        for amount in (5, 7):
            await c.wallet.Credit(
                W.CreditRequest(operation_ref=ref(), account_id=account_id, amount=usd(amount))
            )
        await c.wallet.Debit(
            W.DebitRequest(operation_ref=ref(), account_id=account_id, amount=usd(4))
        )
        first = await c.wallet.ListEntries(W.ListEntriesRequest(account_id=account_id, page_size=3))
        rest = await c.wallet.ListEntries(
            W.ListEntriesRequest(
                account_id=account_id, page_size=3, page_token=first.next_page_token
            )
        )
    running = [e.balance_after.amount_minor for e in [*first.entries, *rest.entries]]
    assert running == [10, 15, 22, 18]
    assert rest.next_page_token == ""


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        (W.DebitRequest(operation_ref="r", account_id="nope", amount=usd(1)), ["account_id"]),
        (W.DebitRequest(operation_ref="r", account_id=str(uuid.uuid4())), ["amount"]),
        (
            W.DebitRequest(operation_ref="", account_id=str(uuid.uuid4()), amount=usd(-1)),
            ["amount.amount_minor"],
        ),
    ],
)
async def test_bad_input_is_invalid_argument(
    suite: Suite, request_: W.DebitRequest, fields: list[str]
) -> None:
    async with clients(suite) as c:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await c.wallet.Debit(request_)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(caught.value)[0] == fields


async def test_unknown_accounts_and_holds_are_not_found(suite: Suite) -> None:
    async with clients(suite) as c:
        code, _, _ = await refused(
            c.wallet.Debit(
                W.DebitRequest(operation_ref=ref(), account_id=str(uuid.uuid4()), amount=usd(1))
            )
        )
        code2, _, _ = await refused(c.wallet.GetHold(W.GetHoldRequest(hold_id=str(uuid.uuid4()))))
    assert code == code2 == grpc.StatusCode.NOT_FOUND

"""Races on real PostgreSQL: many debits, holds and transfers on the same two accounts never
overdraw, keep the journal balanced and conserve money; one operation_ref sent many times at
once applies once, whatever the operation."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable

import grpc
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from paysuite.wallet.v1 import wallet_pb2
from tests.conftest import Suite
from tests.integration.helpers import Clients, clients, open_account, usd

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]
W = wallet_pb2


def ref() -> str:
    return str(uuid.uuid4())


async def funded(c: Clients, amount_minor: int) -> str:
    account_id = await open_account(c)
    await c.wallet.Credit(
        W.CreditRequest(operation_ref=ref(), account_id=account_id, amount=usd(amount_minor))
    )
    return account_id


async def balances(c: Clients, *account_ids: str) -> list[W.Balance]:
    return [await c.wallet.GetBalance(W.GetBalanceRequest(account_id=a)) for a in account_ids]


async def tolerate_refusal(call: Awaitable[object]) -> str:
    """Runs one racing call and names its outcome: the status code of a refusal."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code().name
    return "applied"


async def test_racing_debits_holds_and_transfers_never_overdraw(
    suite: Suite, wallet_engine: AsyncEngine
) -> None:
    rng = random.Random(6)
    async with clients(suite) as c:
        a, b = await funded(c, 1_000), await funded(c, 1_000)
        holds: list[str] = []

        async def place(account: str) -> None:
            hold = await c.wallet.PlaceHold(
                W.PlaceHoldRequest(operation_ref=ref(), account_id=account, amount=usd(60))
            )
            holds.append(hold.hold_id)

        def operation(i: int) -> Callable[[], Awaitable[object]]:
            source, destination = (a, b) if i % 2 else (b, a)
            amount = usd(rng.randint(20, 90))
            match i % 3:
                case 0:
                    return lambda: c.wallet.Debit(
                        W.DebitRequest(operation_ref=ref(), account_id=source, amount=amount)
                    )
                case 1:
                    return lambda: place(source)
                case _:
                    return lambda: c.wallet.Transfer(
                        W.TransferRequest(
                            operation_ref=ref(),
                            source_account_id=source,
                            destination_account_id=destination,
                            amount=amount,
                        )
                    )

        outcomes = await asyncio.gather(*(tolerate_refusal(operation(i)()) for i in range(90)))
        # Settle every hold the race left: capture half of them, release the rest, at once.
        settle = [
            c.wallet.CaptureHold(W.CaptureHoldRequest(operation_ref=ref(), hold_id=h))
            if i % 2
            else c.wallet.ReleaseHold(W.ReleaseHoldRequest(operation_ref=ref(), hold_id=h))
            for i, h in enumerate(holds)
        ]
        await asyncio.gather(*settle)
        final = await balances(c, a, b)

    # Only clean refusals for lack of money: never ABORTED, never INTERNAL.
    assert set(outcomes) == {"applied", "FAILED_PRECONDITION"}
    for bal in final:
        assert bal.available.amount_minor >= 0
        assert bal.held.amount_minor == 0
    async with wallet_engine.connect() as conn:
        unbalanced = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM (SELECT transaction_id FROM ledger_entries"
                    " GROUP BY transaction_id, currency HAVING sum(amount_minor) <> 0) u"
                )
            )
        ).scalar_one()
        # Money is conserved: what left the two accounts is exactly what the clearing
        # account received through their debits and captures.
        out = (
            await conn.execute(
                text(
                    "SELECT coalesce(sum(e.amount_minor), 0) FROM ledger_entries e"
                    " JOIN ledger_transactions t USING (transaction_id)"
                    " WHERE t.kind IN ('debit', 'capture')"
                    " AND e.account_id = ANY(CAST(:ids AS uuid[]))"
                ),
                {"ids": [a, b]},
            )
        ).scalar_one()
        journal = (
            await conn.execute(
                text(
                    "SELECT coalesce(sum(amount_minor), 0) FROM ledger_entries"
                    " WHERE account_id = ANY(CAST(:ids AS uuid[]))"
                ),
                {"ids": [a, b]},
            )
        ).scalar_one()
    assert unbalanced == 0
    total = sum(bal.total.amount_minor for bal in final)
    assert total == journal == 2_000 + out


async def test_one_ref_sent_concurrently_applies_once_for_every_operation(
    suite: Suite,
) -> None:
    async with clients(suite) as c:
        a, b = await funded(c, 1_000), await open_account(c)
        debit = W.DebitRequest(operation_ref=ref(), account_id=a, amount=usd(100))
        hold = W.PlaceHoldRequest(operation_ref=ref(), account_id=a, amount=usd(100))
        transfer = W.TransferRequest(
            operation_ref=ref(), source_account_id=a, destination_account_id=b, amount=usd(100)
        )
        debits, holds, transfers = await asyncio.gather(
            asyncio.gather(*(c.wallet.Debit(debit) for _ in range(15))),
            asyncio.gather(*(c.wallet.PlaceHold(hold) for _ in range(15))),
            asyncio.gather(*(c.wallet.Transfer(transfer) for _ in range(15))),
        )
        capture = W.CaptureHoldRequest(operation_ref=ref(), hold_id=holds[0].hold_id)
        captures = await asyncio.gather(*(c.wallet.CaptureHold(capture) for _ in range(10)))
        src, dst = await balances(c, a, b)
    assert len({d.transaction_id for d in debits}) == 1
    assert len({h.hold_id for h in holds}) == 1
    assert len({t.transaction_id for t in transfers}) == 1
    assert len({cap.transaction_id for cap in captures}) == 1
    assert (src.total, src.held, dst.total) == (usd(700), usd(0), usd(100))


async def test_a_hot_account_takes_many_concurrent_writers_without_aborting(
    suite: Suite,
) -> None:
    async with clients(suite) as c:
        account_id = await open_account(c)
        await asyncio.gather(
            *(
                c.wallet.Credit(
                    W.CreditRequest(operation_ref=ref(), account_id=account_id, amount=usd(1))
                )
                for _ in range(120)
            )
        )
        (bal,) = await balances(c, account_id)
    # 121 events crossed the snapshot interval many times; loading went through snapshots.
    assert bal.total == usd(120)
    assert bal.version == 121

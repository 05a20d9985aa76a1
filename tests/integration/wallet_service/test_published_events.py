"""Which account events the wallet publishes: by default none (no process of the suite reads
its stream), else the types PAYSUITE_WALLET_PUBLISHED_EVENTS names; the account's history is
its event store either way."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from common.events import WALLET_STREAM
from common.money import Money
from paysuite.wallet.v1 import wallet_pb2
from tests.conftest import Suite
from tests.integration.helpers import clients, open_account, stream_events, usd
from tests.integration.wallet_service.conftest import PrivateWallet
from wallet_service.adapters.event_mapping import publisher
from wallet_service.adapters.uow import WalletUnitOfWork
from wallet_service.service_layer.services import WalletService

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


async def _outbox_types(engine: AsyncEngine, account_id: str) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT event_type FROM outbox WHERE aggregate_id = :a ORDER BY id"),
            {"a": account_id},
        )
        return [r[0] for r in rows]


async def _event_types(engine: AsyncEngine, account_id: str) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT event_type FROM account_events WHERE account_id = :a ORDER BY version"),
            {"a": account_id},
        )
        return [r[0] for r in rows]


async def test_the_suite_wallet_publishes_no_account_event_by_default(
    suite: Suite, redis: Redis, wallet_engine: AsyncEngine
) -> None:
    async with clients(suite) as c:
        account_id = await open_account(c)
        await c.wallet.Credit(
            wallet_pb2.CreditRequest(
                operation_ref=f"pub-{uuid.uuid4()}", account_id=account_id, amount=usd(500)
            )
        )
    assert await _event_types(wallet_engine, account_id) == ["AccountOpened", "Credited"]
    assert await _outbox_types(wallet_engine, account_id) == []
    stream = suite.settings.stream_prefix + WALLET_STREAM
    assert await stream_events(redis, stream, account_id) == []


async def test_the_types_named_are_published_and_no_others(private_wallet: PrivateWallet) -> None:
    publish = publisher(("account.credited", "account.hold_*"))
    service = WalletService(lambda: WalletUnitOfWork(private_wallet.engine, publish=publish))
    account = await service.open_account(owner_id="o", currency="USD", operation_ref="open")
    usd_ = Money(300, "USD")
    await service.credit(operation_ref="c", account_id=account.account_id, amount=usd_)
    await service.debit(operation_ref="d", account_id=account.account_id, amount=Money(100, "USD"))
    await service.place_hold(
        operation_ref="h", account_id=account.account_id, amount=Money(50, "USD")
    )

    assert await _outbox_types(private_wallet.engine, account.account_id) == [
        "account.credited",
        "account.hold_placed",
    ]
    # Every change is in the account's history, published or not.
    assert await _event_types(private_wallet.engine, account.account_id) == [
        "AccountOpened",
        "Credited",
        "Debited",
        "HoldPlaced",
    ]

"""The wallet's lone reads (a hold before its capture or release, an account) go through a
read-only engine: one statement each in autocommit, on sessions the server keeps read-only."""

from __future__ import annotations

import uuid

import pytest

from common import db
from common.money import Money
from tests.integration.wallet_service.conftest import PrivateWallet
from wallet_service.adapters.uow import WalletUnitOfWork
from wallet_service.bootstrap import DATABASE
from wallet_service.service_layer.services import WalletService

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def ref() -> str:
    return str(uuid.uuid4())


async def test_holds_are_read_through_the_read_only_engine_and_captured(
    private_wallet: PrivateWallet,
) -> None:
    reader = db.create_engine(DATABASE.url(private_wallet.settings), pool_size=1, read_only=True)
    reads: list[str] = []

    def reading() -> WalletUnitOfWork:
        reads.append("read")
        return WalletUnitOfWork(reader)

    engine = private_wallet.engine
    service = WalletService(lambda: WalletUnitOfWork(engine), reader=reading)
    try:
        account = await service.open_account(owner_id="o", currency="USD", operation_ref=ref())
        await service.credit(
            operation_ref=ref(), account_id=account.account_id, amount=Money(900, "USD")
        )
        hold = await service.place_hold(
            operation_ref=ref(), account_id=account.account_id, amount=Money(400, "USD")
        )
        reads.clear()
        await service.capture_hold(operation_ref=ref(), hold_id=hold.hold_id)
        assert reads == ["read"]  # the hold, read before its capture
        seen = await service.get_account(account.account_id)
        assert (seen.total_minor, seen.held_minor) == (500, 0)
        assert reads == ["read", "read"]
        # Named by the caller (as the payment service names a withdrawal's source), the
        # hold's account is locked at once: no read before the capture or the release.
        again = [
            await service.place_hold(
                operation_ref=ref(), account_id=account.account_id, amount=Money(100, "USD")
            )
            for _ in range(2)
        ]
        reads.clear()
        await service.capture_hold(
            operation_ref=ref(), hold_id=again[0].hold_id, account_id=account.account_id
        )
        await service.release_hold(
            operation_ref=ref(), hold_id=again[1].hold_id, account_id=account.account_id
        )
        assert reads == []
    finally:
        await reader.dispose()

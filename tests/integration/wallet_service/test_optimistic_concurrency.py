"""Never a lost update: an account written from a stale state loses on its version, and a
writer that keeps losing gives up after a bounded number of attempts with ABORTED."""

from __future__ import annotations

import uuid

import grpc
import pytest

from common.errors import ConcurrentUpdate
from common.grpc.errors import status_for
from common.money import Money
from tests.integration.wallet_service.conftest import PrivateWallet
from wallet_service.adapters.repository import WalletRepository
from wallet_service.adapters.uow import WalletUnitOfWork
from wallet_service.domain import postings
from wallet_service.domain.account import Limits
from wallet_service.domain.errors import VersionConflict
from wallet_service.service_layer.mutations import ATTEMPTS

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def ref() -> str:
    return str(uuid.uuid4())


async def test_a_write_from_a_stale_state_loses_on_its_version(
    private_wallet: PrivateWallet,
) -> None:
    service, engine = private_wallet.service, private_wallet.engine
    account_id = (
        await service.open_account(owner_id="o", currency="USD", operation_ref=ref())
    ).account_id
    async with WalletUnitOfWork(engine) as uow:
        accounts, _ = await uow.accounts.lock([account_id])
    stale = accounts[account_id]  # loaded at version 1, lock released
    await service.credit(operation_ref=ref(), account_id=account_id, amount=Money(5, "USD"))
    txn = postings.credit(stale, Money(7, "USD"), operation_ref=ref(), limits=Limits())
    async with WalletUnitOfWork(engine) as uow:
        await uow.accounts.save([stale])
        await uow.accounts.add_transaction(txn)
        with pytest.raises(VersionConflict):
            await uow.commit()
    account = await service.get_account(account_id)
    assert account.total == Money(5, "USD")
    assert account.version == 2


async def test_a_writer_that_keeps_losing_gives_up_with_aborted(
    private_wallet: PrivateWallet, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = private_wallet.service
    account_id = (
        await service.open_account(owner_id="o", currency="USD", operation_ref=ref())
    ).account_id
    attempts = 0

    async def always_lose(self: WalletRepository) -> None:
        nonlocal attempts
        attempts += 1
        raise VersionConflict("another writer won")

    monkeypatch.setattr(WalletRepository, "flush", always_lose)
    with pytest.raises(ConcurrentUpdate) as caught:
        await service.credit(operation_ref=ref(), account_id=account_id, amount=Money(5, "USD"))
    assert attempts == ATTEMPTS
    assert status_for(caught.value) is grpc.StatusCode.ABORTED

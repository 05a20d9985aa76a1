"""The account cache is a snapshot in memory: a load that starts from it folds to the state a
load from the stored history folds to, whoever wrote the events after it (another replica,
with a cache of its own), and across the stored snapshots."""

from __future__ import annotations

import uuid

import pytest

from common.money import Money
from tests.integration.wallet_service.conftest import PrivateWallet
from wallet_service.adapters.repository import AccountCache
from wallet_service.adapters.uow import WalletUnitOfWork
from wallet_service.domain.account import Account, Limits
from wallet_service.service_layer.services import WalletService

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


def ref() -> str:
    return str(uuid.uuid4())


def state(account: Account) -> tuple[object, ...]:
    return (
        account.version,
        account.last_hash,
        account.total_minor,
        account.held_minor,
        account.status,
        sorted(account.holds),
    )


async def test_loads_from_the_cache_fold_to_the_stored_history(
    private_wallet: PrivateWallet,
) -> None:
    engine = private_wallet.engine
    cache_a, cache_b = AccountCache(), AccountCache()
    replica_a = WalletService(lambda: WalletUnitOfWork(engine, snapshot_every=5, cache=cache_a))
    replica_b = WalletService(lambda: WalletUnitOfWork(engine, snapshot_every=5, cache=cache_b))
    source = await replica_a.open_account(owner_id="o", currency="USD", operation_ref=ref())
    other = await replica_a.open_account(owner_id="o", currency="USD", operation_ref=ref())
    usd = Money(10, "USD")
    for n in range(13):  # the two replicas in turn, past two stored snapshots
        replica = replica_a if n % 3 else replica_b
        await replica.credit(operation_ref=ref(), account_id=source.account_id, amount=usd)
        if n % 4 == 0:
            await replica.transfer(
                operation_ref=ref(),
                source_account_id=source.account_id,
                destination_account_id=other.account_id,
                amount=Money(3, "USD"),
            )
    hold = await replica_b.place_hold(
        operation_ref=ref(), account_id=source.account_id, amount=Money(7, "USD")
    )
    await replica_a.credit(operation_ref=ref(), account_id=source.account_id, amount=usd)

    cached = cache_a.get(source.account_id)
    assert cached is not None
    assert cached.holds
    async with WalletUnitOfWork(engine, cache=cache_a) as uow:
        from_cache, _ = await uow.accounts.lock([source.account_id, other.account_id])
    async with WalletUnitOfWork(engine) as uow:
        from_history, _ = await uow.accounts.lock([source.account_id, other.account_id])
    for account_id in (source.account_id, other.account_id):
        assert state(from_cache[account_id]) == state(from_history[account_id])
    assert hold.hold_id in from_history[source.account_id].holds
    assert from_history[source.account_id].total_minor == 14 * 10 - 4 * 3
    read = await private_wallet.service.get_account(source.account_id)
    assert read.version == from_history[source.account_id].version


async def test_a_cached_state_is_a_copy_that_a_refused_or_rolled_back_change_leaves_alone(
    private_wallet: PrivateWallet,
) -> None:
    engine = private_wallet.engine
    cache = AccountCache()
    service = WalletService(lambda: WalletUnitOfWork(engine, cache=cache))
    account = await service.open_account(owner_id="o", currency="USD", operation_ref=ref())
    await service.credit(operation_ref=ref(), account_id=account.account_id, amount=Money(5, "USD"))
    before = cache.get(account.account_id)
    assert before is not None
    assert before.total_minor == 5
    async with WalletUnitOfWork(engine, cache=cache) as uow:
        accounts, _ = await uow.accounts.lock([account.account_id])
        accounts[account.account_id].credit("t", Money(9, "USD"), "r", Limits())
        # left without a commit: rolled back
    again = cache.get(account.account_id)
    assert again is not None
    assert state(again) == state(before)


async def test_a_cached_state_whose_last_hash_the_history_does_not_hold_is_not_used(
    private_wallet: PrivateWallet,
) -> None:
    """As after a database restored behind the process's back: the same version, another
    history."""
    engine = private_wallet.engine
    cache = AccountCache()
    service = WalletService(lambda: WalletUnitOfWork(engine, cache=cache))
    account = await service.open_account(owner_id="o", currency="USD", operation_ref=ref())
    await service.credit(operation_ref=ref(), account_id=account.account_id, amount=Money(5, "USD"))
    held = cache.get(account.account_id)
    assert held is not None
    other = held.copy()
    other.total_minor, other.last_hash = 999, "f" * 64
    cache.put(other)
    async with WalletUnitOfWork(engine, cache=cache) as uow:
        accounts, _ = await uow.accounts.lock([account.account_id])
    loaded = accounts[account.account_id]
    assert (loaded.total_minor, loaded.last_hash) == (5, held.last_hash)

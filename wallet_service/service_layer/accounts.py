"""Accounts: open one, read one, and its lifecycle (freeze, unfreeze, close)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from common.auth import SYSTEM, Principal, denied
from common.errors import require, retry_on_conflict
from common.ids import parse_id
from common.money import validate_currency
from wallet_service.domain.account import Account
from wallet_service.domain.errors import AccountNotFound, OperationRefReused
from wallet_service.domain.ledger import AccountKind, SystemAccount
from wallet_service.service_layer.mutations import Mutation, Mutations
from wallet_service.service_layer.ports import UnitOfWork


async def _replay_account(uow: UnitOfWork, stored: dict[str, Any]) -> Account:
    account = await uow.accounts.get(stored["account_id"])
    if account is None:  # pragma: no cover - accounts are never deleted
        raise AccountNotFound(stored["account_id"])
    return account


class Accounts(Mutations):
    async def open_account(
        self, *, owner_id: str, currency: str, operation_ref: str, caller: Principal = SYSTEM
    ) -> Account:
        require(owner_id, "owner_id")
        if not caller.may_act_for(owner_id):
            raise denied("open an account for another owner")
        require(operation_ref, "operation_ref")
        validate_currency(currency)

        async def attempt() -> Account:
            async with self._uow() as uow:
                existing = await uow.accounts.find_opened(owner_id, operation_ref)
                if existing is not None:
                    if existing.currency != currency:
                        # The ref opened a different account: a reuse, like any other.
                        raise OperationRefReused(operation_ref)
                    return existing
                account = Account.open(owner_id=owner_id, currency=currency, open_ref=operation_ref)
                await uow.accounts.ensure_system([SystemAccount.clearing(currency)])
                await uow.accounts.add(account)
                await uow.commit()
                return account

        return await retry_on_conflict(attempt, attempts=self._attempts)

    async def get_account(
        self,
        account_id: str,
        *,
        caller: Principal = SYSTEM,
        may: Callable[[Principal, str], bool] = Principal.may_read,
    ) -> Account:
        """The account, if the caller may read it (or do `may` with it). To a caller who may
        not, an account that does not exist is refused alike (no probing of ids)."""
        account_id = parse_id(account_id, "account_id")
        async with self._reader() as uow:
            account = await uow.accounts.get(account_id)
            await uow.commit()  # not ROLLBACK, which drops the prepared statements
        if account is None or account.kind is not AccountKind.CUSTOMER:
            # `may` asked of no owner at all: what the caller's role allows, whoever owns it.
            if may(caller, ""):
                raise AccountNotFound(account_id)
            account = None
        if account is None or not may(caller, account.owner_id):
            raise denied(
                "read this account" if may is Principal.may_read else "change this account"
            )
        return account

    async def freeze(self, *, operation_ref: str, account_id: str) -> Account:
        return await self._operate(
            self._lifecycle("freeze", operation_ref, account_id, Account.freeze)
        )

    async def unfreeze(self, *, operation_ref: str, account_id: str) -> Account:
        return await self._operate(
            self._lifecycle("unfreeze", operation_ref, account_id, Account.unfreeze)
        )

    async def close(
        self, *, operation_ref: str, account_id: str, caller: Principal = SYSTEM
    ) -> Account:
        await self.get_account(account_id, caller=caller, may=Principal.may_support)
        return await self._operate(
            self._lifecycle("close", operation_ref, account_id, Account.close)
        )

    @staticmethod
    def _lifecycle(
        kind: str, operation_ref: str, account_id: str, change: Callable[[Account, str], None]
    ) -> Mutation[Account]:
        require(operation_ref, "operation_ref")
        account_id = parse_id(account_id, "account_id")

        async def act(
            uow: UnitOfWork, accounts: dict[str, Account]
        ) -> tuple[Account, dict[str, Any]]:
            account = accounts[account_id]
            change(account, operation_ref)
            return account, {"account_id": account_id}

        return Mutation(operation_ref, kind, account_id, [account_id], act, _replay_account)

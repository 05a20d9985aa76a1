"""Wallet use cases. Each runs in one unit of work; every mutation is idempotent on its ref."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from common.errors import FieldViolation, NotFound, ValidationError, require, retry_on_conflict
from common.ids import parse_id
from common.money import Money, validate_currency
from common.uow import UnitOfWork as BaseUnitOfWork
from wallet_service.domain.model import (
    Account,
    AccountKind,
    Entry,
    LedgerTransaction,
    TransactionKind,
    check_replay,
    move,
)


class AccountStore(Protocol):
    async def get(self, account_id: str, *, for_update: bool = False) -> Account | None: ...
    async def find_opened(self, owner_id: str, open_ref: str) -> Account | None: ...
    async def add(self, account: Account) -> None: ...
    async def ensure_clearing(self, currency: str) -> None: ...
    async def save(self, account: Account) -> None: ...
    async def find_transaction(self, operation_ref: str) -> LedgerTransaction | None: ...
    async def add_transaction(self, txn: LedgerTransaction) -> None: ...
    async def list_entries(
        self, account_id: str, *, limit: int, after_seq: int
    ) -> list[tuple[int, Entry, str, Any]]: ...


class UnitOfWork(BaseUnitOfWork, Protocol):
    @property
    def accounts(self) -> AccountStore: ...


@dataclass(frozen=True, slots=True)
class EntryPage:
    entries: list[tuple[Entry, str, Any]]
    next_page_token: str


class WalletService:
    def __init__(self, uow: Callable[[], UnitOfWork]) -> None:
        self._uow = uow

    async def open_account(self, *, owner_id: str, currency: str, operation_ref: str) -> Account:
        require(owner_id, "owner_id")
        require(operation_ref, "operation_ref")
        validate_currency(currency)

        async def attempt() -> Account:
            async with self._uow() as uow:
                existing = await uow.accounts.find_opened(owner_id, operation_ref)
                if existing is not None:
                    if existing.currency != currency:
                        raise ValidationError(
                            FieldViolation(
                                "operation_ref",
                                f"already opened a {existing.currency} account for this owner",
                            )
                        )
                    return existing
                account = Account.open(owner_id=owner_id, currency=currency, open_ref=operation_ref)
                await uow.accounts.ensure_clearing(currency)
                await uow.accounts.add(account)
                uow.track(account)
                await uow.commit()
                return account

        return await retry_on_conflict(attempt)

    async def get_account(self, account_id: str) -> Account:
        account_id = parse_id(account_id, "account_id")
        async with self._uow() as uow:
            account = await uow.accounts.get(account_id)
        if account is None or account.kind is not AccountKind.CUSTOMER:
            raise NotFound("account", account_id)
        return account

    async def credit(
        self, *, operation_ref: str, account_id: str, amount: Money, description: str = ""
    ) -> LedgerTransaction:
        return await self._move(
            TransactionKind.CREDIT, operation_ref, account_id, amount, description
        )

    async def debit(
        self, *, operation_ref: str, account_id: str, amount: Money, description: str = ""
    ) -> LedgerTransaction:
        return await self._move(
            TransactionKind.DEBIT, operation_ref, account_id, amount, description
        )

    async def _move(
        self,
        kind: TransactionKind,
        operation_ref: str,
        account_id: str,
        amount: Money,
        description: str,
    ) -> LedgerTransaction:
        require(operation_ref, "operation_ref")
        account_id = parse_id(account_id, "account_id")

        async def attempt() -> LedgerTransaction:
            async with self._uow() as uow:
                account = await uow.accounts.get(account_id, for_update=True)
                if account is None or account.kind is not AccountKind.CUSTOMER:
                    raise NotFound("account", account_id)
                existing = await uow.accounts.find_transaction(operation_ref)
                if existing is not None:
                    return check_replay(existing, kind, account_id, amount)
                txn = move(
                    operation_ref=operation_ref,
                    kind=kind,
                    account=account,
                    amount=amount,
                    description=description,
                )
                uow.track(account)
                await uow.accounts.add_transaction(txn)
                await uow.accounts.save(account)
                await uow.commit()
                return txn

        return await retry_on_conflict(attempt)

    async def list_entries(self, account_id: str, *, page_size: int, page_token: str) -> EntryPage:
        account = await self.get_account(account_id)
        size = page_size or 100
        if not 1 <= size <= 500:
            raise ValidationError(FieldViolation("page_size", "must be between 1 and 500"))
        try:
            after = int(page_token or "0")
        except ValueError:
            raise ValidationError(FieldViolation("page_token", "is not a valid token")) from None
        async with self._uow() as uow:
            rows = await uow.accounts.list_entries(account.account_id, limit=size, after_seq=after)
        token = str(rows[-1][0]) if len(rows) == size else ""
        return EntryPage([(entry, txn, at) for _, entry, txn, at in rows], token)

"""SQL persistence of accounts and ledger transactions.

Locking rules: a balance changes only under `SELECT ... FOR UPDATE` of its account row, taken
before the operation_ref is looked up, so two calls with the same reference serialise and the
second sees the first's transaction. Clearing accounts are never locked (they keep no balance).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import unique_violation_is_conflict
from common.money import Money
from wallet_service.adapters import tables as t
from wallet_service.domain.model import (
    Account,
    AccountKind,
    Entry,
    LedgerTransaction,
    TransactionKind,
)


def _account(row: Any) -> Account:
    return Account(
        account_id=str(row.account_id),
        owner_id=row.owner_id,
        currency=row.currency,
        kind=AccountKind(row.kind),
        total_minor=row.total_minor,
        held_minor=row.held_minor,
        version=row.version,
        open_ref=row.open_ref,
        created_at=row.created_at,
    )


class WalletRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def get(self, account_id: str, *, for_update: bool = False) -> Account | None:
        query = select(t.accounts).where(t.accounts.c.account_id == account_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._conn.execute(query)).first()
        return _account(row) if row else None

    async def find_opened(self, owner_id: str, open_ref: str) -> Account | None:
        query = select(t.accounts).where(
            t.accounts.c.owner_id == owner_id, t.accounts.c.open_ref == open_ref
        )
        row = (await self._conn.execute(query)).first()
        return _account(row) if row else None

    async def add(self, account: Account) -> None:
        async with unique_violation_is_conflict():
            await self._conn.execute(insert(t.accounts).values(**self._row(account)))

    async def ensure_clearing(self, currency: str) -> None:
        clearing = Account.clearing(currency)
        await self._conn.execute(
            pg_insert(t.accounts).values(**self._row(clearing)).on_conflict_do_nothing()
        )

    async def save(self, account: Account) -> None:
        await self._conn.execute(
            update(t.accounts)
            .where(t.accounts.c.account_id == account.account_id)
            .values(
                total_minor=account.total_minor,
                held_minor=account.held_minor,
                version=account.version,
            )
        )

    async def find_transaction(self, operation_ref: str) -> LedgerTransaction | None:
        header = (
            await self._conn.execute(
                select(t.ledger_transactions).where(
                    t.ledger_transactions.c.operation_ref == operation_ref
                )
            )
        ).first()
        if header is None:
            return None
        rows = (
            await self._conn.execute(
                select(t.ledger_entries)
                .where(t.ledger_entries.c.transaction_id == header.transaction_id)
                .order_by(t.ledger_entries.c.seq)
            )
        ).all()
        return LedgerTransaction(
            transaction_id=str(header.transaction_id),
            operation_ref=header.operation_ref,
            kind=TransactionKind(header.kind),
            description=header.description,
            created_at=header.created_at,
            entries=[
                Entry(str(r.entry_id), str(r.account_id), Money(r.amount_minor, r.currency))
                for r in rows
            ],
        )

    async def add_transaction(self, txn: LedgerTransaction) -> None:
        async with unique_violation_is_conflict():
            await self._insert_transaction(txn)

    async def _insert_transaction(self, txn: LedgerTransaction) -> None:
        await self._conn.execute(
            insert(t.ledger_transactions).values(
                transaction_id=txn.transaction_id,
                operation_ref=txn.operation_ref,
                kind=txn.kind.value,
                description=txn.description,
            )
        )
        await self._conn.execute(
            insert(t.ledger_entries),
            [
                {
                    "entry_id": e.entry_id,
                    "transaction_id": txn.transaction_id,
                    "account_id": e.account_id,
                    "amount_minor": e.amount.amount_minor,
                    "currency": e.amount.currency,
                }
                for e in txn.entries
            ],
        )

    async def list_entries(
        self, account_id: str, *, limit: int, after_seq: int
    ) -> list[tuple[int, Entry, str, Any]]:
        rows = (
            await self._conn.execute(
                select(t.ledger_entries)
                .where(t.ledger_entries.c.account_id == account_id)
                .where(t.ledger_entries.c.seq > after_seq)
                .order_by(t.ledger_entries.c.seq)
                .limit(limit)
            )
        ).all()
        return [
            (
                r.seq,
                Entry(str(r.entry_id), str(r.account_id), Money(r.amount_minor, r.currency)),
                str(r.transaction_id),
                r.created_at,
            )
            for r in rows
        ]

    @staticmethod
    def _row(account: Account) -> dict[str, Any]:
        return {
            "account_id": account.account_id,
            "owner_id": account.owner_id,
            "currency": account.currency,
            "kind": account.kind.value,
            "total_minor": account.total_minor,
            "held_minor": account.held_minor,
            "version": account.version,
            "open_ref": account.open_ref,
        }

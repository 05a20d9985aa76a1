"""Reading the books: an account's statement (its entries, a page at a time), the journal's
transactions by operation ref for a reconciliation, and the journal in time order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from common.auth import SYSTEM, Principal
from common.errors import FieldViolation, ValidationError, require
from common.ids import parse_id
from wallet_service.domain.ledger import Entry, RecordedTransaction
from wallet_service.service_layer.accounts import Accounts

# Refs per GetTransactions call, and transactions per ListTransactions page at most.
MAX_REFS = 500
MAX_TRANSACTION_PAGE = 500


@dataclass(frozen=True, slots=True)
class TransactionPage:
    transactions: list[RecordedTransaction]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class EntryPage:
    entries: list[tuple[Entry, str, datetime]]
    next_page_token: str


def _transaction_cursor(txn: RecordedTransaction) -> str:
    return f"{txn.created_at.isoformat()}|{txn.transaction_id}"


def _parse_transaction_cursor(token: str) -> tuple[datetime, str] | None:
    if not token:
        return None
    stamp, _, transaction_id = token.partition("|")
    try:
        return datetime.fromisoformat(stamp), parse_id(transaction_id, "page_token")
    except (ValueError, ValidationError):
        raise ValidationError(FieldViolation("page_token", "is not a valid token")) from None


class Queries(Accounts):
    async def list_entries(
        self, account_id: str, *, page_size: int, page_token: str, caller: Principal = SYSTEM
    ) -> EntryPage:
        account = await self.get_account(account_id, caller=caller)
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

    async def get_transactions(self, operation_refs: Sequence[str]) -> list[RecordedTransaction]:
        """The journal's transactions under these refs, as stored (refs with none are left
        out): one read for a whole page of a reconciliation."""
        refs = sorted(set(operation_refs))
        if len(refs) > MAX_REFS:
            raise ValidationError(
                FieldViolation("operation_refs", f"must name at most {MAX_REFS} refs")
            )
        for ref in refs:
            require(ref, "operation_refs", max_length=256)
        if not refs:
            return []
        async with self._uow() as uow:
            return await uow.accounts.transactions_by_refs(refs)

    async def list_transactions(
        self, *, created_after: datetime | None, page_size: int, page_token: str
    ) -> TransactionPage:
        """The journal in (created_at, transaction_id) order from `created_after`, a page at
        a time, each transaction with its entries as stored."""
        size = page_size or 100
        if not 1 <= size <= MAX_TRANSACTION_PAGE:
            raise ValidationError(
                FieldViolation("page_size", f"must be between 1 and {MAX_TRANSACTION_PAGE}")
            )
        after = _parse_transaction_cursor(page_token)
        since = created_after or datetime.min.replace(tzinfo=UTC)
        async with self._uow() as uow:
            txns = await uow.accounts.list_transactions(
                created_after=since, after=after, limit=size
            )
        token = _transaction_cursor(txns[-1]) if len(txns) == size else ""
        return TransactionPage(txns, token)

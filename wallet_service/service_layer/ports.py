"""What the wallet's use cases need from the outside, as small Protocols (fakes in unit tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Protocol

from common.uow import UnitOfWork as BaseUnitOfWork
from wallet_service.domain.account import Account
from wallet_service.domain.fx import FxRate
from wallet_service.domain.holds import HoldView
from wallet_service.domain.ledger import (
    Entry,
    LedgerTransaction,
    Operation,
    RecordedTransaction,
    SystemAccount,
)


class WalletStore(Protocol):
    """What the use cases need of storage. Its locking and idempotency rules are written at
    the top of wallet_service.adapters.repository; writes are kept until the commit."""

    async def get(self, account_id: str) -> Account | None: ...
    async def lock(
        self, account_ids: Iterable[str], *, operation_refs: Iterable[str] = ()
    ) -> tuple[dict[str, Account], dict[str, Operation]]: ...
    async def find_opened(self, owner_id: str, open_ref: str) -> Account | None: ...
    async def add(self, account: Account) -> None: ...
    async def ensure_system(self, accounts: Iterable[SystemAccount]) -> None: ...
    async def save(self, accounts: Iterable[Account]) -> None: ...
    async def find_hold(self, hold_id: str) -> HoldView | None: ...
    async def accounts_with_expired_holds(self, now: datetime, *, limit: int) -> list[str]: ...
    async def add_transaction(self, txn: LedgerTransaction) -> None: ...
    async def get_transaction(self, transaction_id: str) -> LedgerTransaction | None: ...
    async def transactions_by_refs(self, refs: Sequence[str]) -> list[RecordedTransaction]: ...
    async def list_transactions(
        self, *, created_after: datetime, after: tuple[datetime, str] | None, limit: int
    ) -> list[RecordedTransaction]:
        """Transactions created at or after `created_after`, in (created_at, transaction_id)
        order, strictly after the cursor `after`."""
        ...

    async def list_entries(
        self, account_id: str, *, limit: int, after_seq: int
    ) -> list[tuple[int, Entry, str, datetime]]: ...
    async def add_operation(self, operation: Operation) -> None: ...
    async def latest_rate(self, base: str, quote: str) -> FxRate | None: ...
    async def add_rate(self, rate: FxRate) -> None: ...


class UnitOfWork(BaseUnitOfWork, Protocol):
    @property
    def accounts(self) -> WalletStore: ...


# Told of every mutation once it is answered: its kind, the error it raised (None when it
# succeeded) and when it started (time.perf_counter()). The service's metrics
# (wallet_service.adapters.metrics.observe) in the running service.
Observe = Callable[[str, BaseException | None, float], None]

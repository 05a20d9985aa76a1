"""SQL persistence of the wallet: account histories and their projections, the journal, holds,
operations and FX rates.

Locking and idempotency rules, which the service layer relies on:
- An account changes only in a transaction that holds its row lock (`lock`), taken for several
  accounts in one statement ordered by id, so two transfers in opposite directions cannot
  deadlock. The lock is what keeps a hot account's writers in a queue instead of failing.
- Its history is appended under the unique `(account_id, version)`: a writer that appends from a
  stale state loses with `VersionConflict` (the unit of work is retried a bounded number of
  times, then the caller sees ABORTED), so an update is never lost, lock or no lock.
- An operation_ref is looked up after the lock, so two calls with one ref serialise and the
  second replays the first; the operations primary key backs that up.
- System accounts are never locked and keep no balance.

Every public method runs inside the adapter boundary (boundary.py): no SQLAlchemy or psycopg
exception crosses it. The hot statements are in statements.py, row mapping in rows.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from psycopg.rows import namedtuple_row
from sqlalchemy import Select, insert, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import RawConnection
from wallet_service.adapters import rows
from wallet_service.adapters import statements as sql
from wallet_service.adapters import tables as t
from wallet_service.adapters.boundary import boundary
from wallet_service.domain.account import Account
from wallet_service.domain.errors import VersionConflict
from wallet_service.domain.fx import FxRate
from wallet_service.domain.holds import HoldStatus, HoldView
from wallet_service.domain.ledger import (
    AccountKind,
    Entry,
    LedgerTransaction,
    Operation,
    RecordedTransaction,
    SystemAccount,
    TransactionKind,
)


class AccountCache:
    """The state of the accounts this process last committed or loaded, each at its version:
    a snapshot in memory. `lock` still takes every row lock and reads every event after the
    version held here (another replica's, say), so what a load returns is the fold of the
    history as before; only the replay of what this process already folded is skipped.
    Entries are copies that nobody changes; bounded, oldest first out."""

    def __init__(self, max_accounts: int = 20_000) -> None:
        self._max = max_accounts
        self._states: dict[str, Account] = {}

    def get(self, account_id: str) -> Account | None:
        return self._states.get(account_id)

    def put(self, account: Account) -> None:
        states = self._states
        states.pop(account.account_id, None)
        states[account.account_id] = account.copy()
        if len(states) > self._max:
            del states[next(iter(states))]


class WalletRepository:
    def __init__(
        self,
        conn: AsyncConnection,
        raw: RawConnection,
        *,
        track: Callable[[Account], None],
        known_system: set[str],
        snapshot_every: int,
        cache: AccountCache | None = None,
    ) -> None:
        self._conn = conn
        self._raw = raw
        self._track = track
        self._known_system = known_system
        self._snapshot_every = snapshot_every
        self._cache = cache
        self._loaded: list[Account] = []
        self._pending = sql.Pending()
        self.created_system: list[str] = []

    # -- accounts ------------------------------------------------------------------------

    @boundary
    async def get(self, account_id: str) -> Account | None:
        """The read model of one account (no lock, no history)."""
        row = await self._first(select(t.accounts).where(t.accounts.c.account_id == account_id))
        return rows.projected(row) if row else None

    @boundary
    async def lock(
        self, account_ids: Iterable[str], *, operation_refs: Iterable[str] = ()
    ) -> tuple[dict[str, Account], dict[str, Operation]]:
        """Locks the accounts and loads each from its latest snapshot and later events, with
        the operations already recorded under any of `operation_refs`."""
        ids = sorted(set(account_ids))
        # Taken before the read: the entries the statement is told of are the ones rebuilt
        # from, whatever another unit of work puts in the cache meanwhile.
        known = [self._cache.get(i) if self._cache is not None else None for i in ids]
        refs = sorted(set(operation_refs))
        params = {
            "ids": ids,
            "refs": refs,
            "known": [k.version if k is not None else 0 for k in known],
            "hashes": [k.last_hash if k is not None else "" for k in known],
        }
        loaded = await self._fetch(sql.LOCK_AND_LOAD, params)
        if any(sql.stale(row) for row in loaded):
            loaded = await self._fetch(sql.HISTORY, params)
        held = {i: k for i, k in zip(ids, known, strict=True) if k is not None}
        accounts = {}
        for row in loaded:
            account = self._rebuild(row, held.get(row.account_id))
            if account is not None:
                accounts[account.account_id] = account
        if loaded:
            found = loaded[0].operations or []
        else:
            found = await self._operations(refs) if refs else []
        operations = {ref: Operation(ref, kind, fp, result) for ref, kind, fp, result in found}
        return accounts, operations

    async def _operations(self, refs: list[str]) -> list[tuple[str, str, str, Any]]:
        found = await self._conn.execute(
            select(t.operations).where(t.operations.c.operation_ref.in_(refs))
        )
        return [(r.operation_ref, r.kind, r.fingerprint, r.result) for r in found]

    async def _fetch(self, query: str, params: dict[str, Any]) -> list[Any]:
        async with self._raw.cursor(row_factory=namedtuple_row) as cursor:
            await cursor.execute(query, params)
            return await cursor.fetchall()

    async def _first(self, query: Select[Any]) -> Any:
        return (await self._conn.execute(query)).first()

    def _rebuild(self, row: Any, held: Account | None) -> Account | None:
        if row.cached_version is not None:
            if held is None:  # pragma: no cover - only a version the cache gave is sent
                raise AssertionError("a load started from a state this process does not hold")
            account = held.copy()
        else:
            account = rows.identity(row)
            if account.kind is not AccountKind.CUSTOMER:
                return None
            if row.state is not None:
                account.restore(row.state)
        account.replay(sql.recorded_event(account.account_id, raw) for raw in row.events)
        self._track(account)
        self._loaded.append(account)
        return account

    def committed(self) -> None:
        """The unit of work committed: every account it loaded is, as it stands, the state
        its stored history folds to (no event is left unwritten)."""
        if self._cache is None:
            return
        for account in self._loaded:
            if not account.new_events:
                self._cache.put(account)
        self._loaded = []

    @boundary
    async def find_opened(self, owner_id: str, open_ref: str) -> Account | None:
        query = select(t.accounts).where(
            t.accounts.c.owner_id == owner_id, t.accounts.c.open_ref == open_ref
        )
        row = await self._first(query)
        return rows.projected(row) if row else None

    @boundary
    async def add(self, account: Account) -> None:
        """Inserts the account's row now (its owner and ref are unique); its events follow
        at commit."""
        await self._conn.execute(
            insert(t.accounts),
            [
                {
                    "account_id": account.account_id,
                    "owner_id": account.owner_id,
                    "currency": account.currency,
                    "kind": account.kind.value,
                    "total_minor": 0,
                    "held_minor": 0,
                    "version": 0,
                    "open_ref": account.open_ref,
                    "status": account.status.value,
                }
            ],
        )
        self._track(account)
        self._pending.accounts[account.account_id] = (account, 0)

    async def ensure_system(self, accounts: Iterable[SystemAccount]) -> None:
        """System accounts are created on first use; a process remembers which exist."""
        for account in accounts:
            if account.account_id not in self._known_system:
                self._pending.system[account.account_id] = account

    async def save(self, accounts: Iterable[Account]) -> None:
        for account in accounts:
            events = account.new_events
            if events and account.account_id not in self._pending.accounts:
                self._pending.accounts[account.account_id] = (account, events[0].version - 1)

    async def add_transaction(self, txn: LedgerTransaction) -> None:
        self._pending.transactions.append(txn)

    async def add_operation(self, operation: Operation) -> None:
        self._pending.operations.append(operation)

    @boundary
    async def flush(self) -> None:
        """Writes everything pending in one statement (see statements.FLUSH)."""
        pending, self._pending = self._pending, sql.Pending()
        if not pending:
            return
        changed = [(a, previous) for a, previous in pending.accounts.values() if a.new_events]
        params = sql.flush_params(pending, changed, snapshot_every=self._snapshot_every)
        (row,) = await self._fetch(sql.FLUSH, params)
        if row.updated != len(changed):
            raise VersionConflict("an account changed after it was loaded")
        for txn in pending.transactions:
            txn.created_at = row.at
        for account, _ in changed:
            account.mark_stored()
        self.created_system += list(pending.system)

    # -- holds ---------------------------------------------------------------------------

    @boundary
    async def find_hold(self, hold_id: str) -> HoldView | None:
        row = await self._first(select(t.holds).where(t.holds.c.hold_id == hold_id))
        return rows.hold_view(row) if row else None

    @boundary
    async def accounts_with_expired_holds(self, now: datetime, *, limit: int) -> list[str]:
        found = await self._conn.execute(
            select(t.holds.c.account_id)
            .where(t.holds.c.status == HoldStatus.OPEN.value, t.holds.c.expires_at <= now)
            .group_by(t.holds.c.account_id)
            .limit(limit)
        )
        return [str(r.account_id) for r in found]

    # -- journal -------------------------------------------------------------------------

    @boundary
    async def get_transaction(self, transaction_id: str) -> LedgerTransaction | None:
        lt = t.ledger_transactions
        header = await self._first(select(lt).where(lt.c.transaction_id == transaction_id))
        if header is None:
            return None
        entries = await self._entries_of([header.transaction_id])
        return LedgerTransaction(
            transaction_id=str(header.transaction_id),
            operation_ref=header.operation_ref,
            kind=TransactionKind(header.kind),
            description=header.description,
            conversion=rows.conversion_from_json(header.conversion),
            created_at=header.created_at,
            entries=entries[str(header.transaction_id)],
        )

    @boundary
    async def transactions_by_refs(self, refs: Sequence[str]) -> list[RecordedTransaction]:
        lt = t.ledger_transactions
        headers = (
            await self._conn.execute(
                select(lt).where(lt.c.operation_ref.in_(list(refs))).order_by(lt.c.created_at)
            )
        ).all()
        return await self._recorded(headers)

    @boundary
    async def list_transactions(
        self, *, created_after: datetime, after: tuple[datetime, str] | None, limit: int
    ) -> list[RecordedTransaction]:
        lt = t.ledger_transactions
        query = select(lt).where(lt.c.created_at >= created_after)
        if after is not None:
            query = query.where(tuple_(lt.c.created_at, lt.c.transaction_id) > after)
        query = query.order_by(lt.c.created_at, lt.c.transaction_id).limit(limit)
        return await self._recorded((await self._conn.execute(query)).all())

    async def _recorded(self, headers: Sequence[Any]) -> list[RecordedTransaction]:
        """The transactions with their entries as stored, in two statements for the page."""
        entries = await self._entries_of([h.transaction_id for h in headers])
        return [
            RecordedTransaction(
                transaction_id=str(h.transaction_id),
                operation_ref=h.operation_ref,
                kind=h.kind,
                entries=entries[str(h.transaction_id)],
                created_at=h.created_at,
                description=h.description,
            )
            for h in headers
        ]

    async def _entries_of(self, transaction_ids: list[Any]) -> dict[str, list[Entry]]:
        """Each transaction's entries in journal order, in one statement."""
        le = t.ledger_entries
        found = await self._conn.execute(
            select(le).where(le.c.transaction_id.in_(transaction_ids)).order_by(le.c.seq)
        )
        entries: dict[str, list[Entry]] = {str(i): [] for i in transaction_ids}
        for r in found:
            entries[str(r.transaction_id)].append(rows.entry(r))
        return entries

    @boundary
    async def list_entries(
        self, account_id: str, *, limit: int, after_seq: int
    ) -> list[tuple[int, Entry, str, datetime]]:
        le = t.ledger_entries
        found = await self._conn.execute(
            select(le)
            .where(le.c.account_id == account_id, le.c.seq > after_seq)
            .order_by(le.c.seq)
            .limit(limit)
        )
        return [(r.seq, rows.entry(r), str(r.transaction_id), r.created_at) for r in found]

    # -- FX rates ------------------------------------------------------------------------

    @boundary
    async def latest_rate(self, base: str, quote: str) -> FxRate | None:
        rates = t.fx_rates
        row = await self._first(
            select(rates)
            .where(rates.c.base == base, rates.c.quote == quote)
            .order_by(rates.c.as_of.desc())
            .limit(1)
        )
        return rows.fx_rate(row) if row else None

    @boundary
    async def add_rate(self, rate: FxRate) -> None:
        await self._conn.execute(
            pg_insert(t.fx_rates)
            .values(
                base=rate.base,
                quote=rate.quote,
                as_of=rate.as_of,
                numerator=rate.rate.numerator,
                denominator=rate.rate.denominator,
                source=rate.source,
            )
            .on_conflict_do_update(
                index_elements=["base", "quote", "as_of"],
                set_={
                    "numerator": rate.rate.numerator,
                    "denominator": rate.rate.denominator,
                    "source": rate.source,
                },
            )
        )

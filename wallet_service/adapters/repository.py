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

Infrastructure failures leave this module as `DependencyUnavailable`, lost races as
`ConcurrentUpdate`; no SQLAlchemy exception crosses it.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from typing import Any, ParamSpec, TypeVar

import psycopg
import sqlalchemy.exc
from psycopg.rows import namedtuple_row
from sqlalchemy import insert, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import RawConnection
from common.errors import ConcurrentUpdate, DependencyUnavailable
from common.money import Money
from wallet_service.adapters import tables as t
from wallet_service.domain import events as ev
from wallet_service.domain.account import Account, AccountStatus
from wallet_service.domain.errors import VersionConflict
from wallet_service.domain.fx import Conversion, FxRate
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

P = ParamSpec("P")
R = TypeVar("R")

UNIQUE_VIOLATION = "23505"
# Lost races PostgreSQL reports on its own; retrying the unit of work is the answer to both.
RETRYABLE = {"40001", "40P01"}


@contextlib.asynccontextmanager
async def translated() -> AsyncIterator[None]:
    """The adapter boundary: SQLAlchemy's exceptions become domain errors here, once."""
    try:
        yield
    except sqlalchemy.exc.IntegrityError as exc:
        if getattr(exc.orig, "sqlstate", None) == UNIQUE_VIOLATION:
            raise VersionConflict("a concurrent request changed the same data") from exc
        raise
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
        if getattr(exc.orig, "sqlstate", None) in RETRYABLE:
            raise ConcurrentUpdate("a concurrent request changed the same data") from exc
        raise DependencyUnavailable("the wallet database is unavailable") from exc
    # The same, raised by plain SQL on the driver connection.
    except psycopg.errors.UniqueViolation as exc:
        raise VersionConflict("a concurrent request changed the same data") from exc
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        if exc.sqlstate in RETRYABLE:
            raise ConcurrentUpdate("a concurrent request changed the same data") from exc
        raise DependencyUnavailable("the wallet database is unavailable") from exc


def boundary(
    method: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        async with translated():
            return await method(*args, **kwargs)

    return wrapper


# The hot statements (lock-and-load, flush) are plain SQL on the transaction's driver
# connection: SQLAlchemy Core's per-statement work is a cost every batch pays, for nothing
# these two statements need (the tables stay described in tables.py, checked by a test).
#
# One round trip locks the accounts and reads each one's latest snapshot, the events after
# it, and the operation already recorded under the caller's ref. Its snapshot predates any
# wait for the lock, so when the locked row (which PostgreSQL re-reads after the wait) is at
# a later version than the history read, a second, fresh read follows (_HISTORY).
_LOCK_AND_LOAD = """
    WITH locked AS (
        SELECT account_id, version FROM accounts
        WHERE account_id = ANY(CAST(%(ids)s AS uuid[]))
        ORDER BY account_id FOR NO KEY UPDATE
    ), snap AS (
        SELECT DISTINCT ON (account_id) account_id, version, state
        FROM account_snapshots WHERE account_id = ANY(CAST(%(ids)s AS uuid[]))
        ORDER BY account_id, version DESC
    )
    SELECT a.account_id, a.owner_id, a.currency, a.kind, a.open_ref, a.created_at,
           l.version AS locked_version, snap.state,
           coalesce((
               SELECT json_agg(json_build_array(e.version, e.event_type, e.payload,
                                                e.prev_hash, e.hash) ORDER BY e.version)
               FROM account_events e
               WHERE e.account_id = a.account_id AND e.version > coalesce(snap.version, 0)
           ), '[]') AS events,
           (SELECT json_agg(json_build_array(o.operation_ref, o.kind, o.fingerprint,
                                             o.result))
            FROM operations o WHERE o.operation_ref = ANY(CAST(%(refs)s AS text[]))) AS operations
    FROM locked l JOIN accounts a USING (account_id) LEFT JOIN snap USING (account_id)
    """
_HISTORY = """
    WITH snap AS (
        SELECT DISTINCT ON (account_id) account_id, version, state
        FROM account_snapshots WHERE account_id = ANY(CAST(%(ids)s AS uuid[]))
        ORDER BY account_id, version DESC
    )
    SELECT a.account_id, a.owner_id, a.currency, a.kind, a.open_ref, a.created_at,
           a.version AS locked_version, snap.state,
           coalesce((
               SELECT json_agg(json_build_array(e.version, e.event_type, e.payload,
                                                e.prev_hash, e.hash) ORDER BY e.version)
               FROM account_events e
               WHERE e.account_id = a.account_id AND e.version > coalesce(snap.version, 0)
           ), '[]') AS events,
           (SELECT json_agg(json_build_array(o.operation_ref, o.kind, o.fingerprint,
                                             o.result))
            FROM operations o WHERE o.operation_ref = ANY(CAST(%(refs)s AS text[]))) AS operations
    FROM accounts a LEFT JOIN snap USING (account_id)
    WHERE a.account_id = ANY(CAST(%(ids)s AS uuid[]))
    """
# Everything a unit of work writes, in one statement: round trips to PostgreSQL are where a
# posting's time goes (design.md §9). Each CTE reads its rows from a JSON array; empty arrays
# write nothing. Foreign keys are checked at the end of the statement, so entries may refer to
# a system account or a transaction inserted beside them. The account UPDATE is conditional on
# the version the history was loaded at: `updated` short of the count is a lost race.
_FLUSH = """
    WITH sys AS (
        INSERT INTO accounts (account_id, owner_id, currency, kind, total_minor, held_minor,
                              version, open_ref, status)
        SELECT x.account_id, 'paysuite', x.currency, x.kind, 0, 0, 0, x.name, 'open'
        FROM jsonb_to_recordset(CAST(%(system)s AS jsonb))
             AS x(account_id uuid, currency text, kind text, name text)
        ON CONFLICT DO NOTHING
    ), evt AS (
        INSERT INTO account_events (account_id, version, event_type, payload, prev_hash, hash)
        SELECT x.account_id, x.version, x.event_type, x.payload, x.prev_hash, x.hash
        FROM jsonb_to_recordset(CAST(%(events)s AS jsonb))
             AS x(account_id uuid, version bigint, event_type text, payload jsonb,
                  prev_hash text, hash text)
    ), acc AS (
        UPDATE accounts a SET total_minor = x.total_minor, held_minor = x.held_minor,
                              version = x.version, status = x.status
        FROM jsonb_to_recordset(CAST(%(accounts)s AS jsonb))
             AS x(account_id uuid, previous bigint, total_minor bigint, held_minor bigint,
                  version bigint, status text)
        WHERE a.account_id = x.account_id AND a.version = x.previous
        RETURNING a.account_id
    ), snp AS (
        INSERT INTO account_snapshots (account_id, version, state)
        SELECT x.account_id, x.version, x.state
        FROM jsonb_to_recordset(CAST(%(snapshots)s AS jsonb))
             AS x(account_id uuid, version bigint, state jsonb)
    ), hold_new AS (
        INSERT INTO holds (hold_id, account_id, currency, amount_minor, captured_minor, status,
                           expires_at, reference)
        SELECT x.hold_id, x.account_id, x.currency, x.amount_minor, 0, 'open', x.expires_at,
               x.reference
        FROM jsonb_to_recordset(CAST(%(new_holds)s AS jsonb))
             AS x(hold_id uuid, account_id uuid, currency text, amount_minor bigint,
                  expires_at timestamptz, reference text)
    ), hold_set AS (
        UPDATE holds h SET status = x.status, captured_minor = x.captured_minor,
                           updated_at = now()
        FROM jsonb_to_recordset(CAST(%(hold_changes)s AS jsonb))
             AS x(hold_id uuid, status text, captured_minor bigint)
        WHERE h.hold_id = x.hold_id
    ), txn AS (
        INSERT INTO ledger_transactions (transaction_id, operation_ref, kind, description,
                                         conversion)
        SELECT x.transaction_id, x.operation_ref, x.kind, x.description, x.conversion
        FROM jsonb_to_recordset(CAST(%(transactions)s AS jsonb))
             AS x(transaction_id uuid, operation_ref text, kind text, description text,
                  conversion jsonb)
    ), ent AS (
        INSERT INTO ledger_entries (entry_id, transaction_id, account_id, amount_minor,
                                    currency, balance_after_minor)
        SELECT x.entry_id, x.transaction_id, x.account_id, x.amount_minor, x.currency,
               x.balance_after_minor
        FROM jsonb_to_recordset(CAST(%(entries)s AS jsonb))
             AS x(n int, entry_id uuid, transaction_id uuid, account_id uuid,
                  amount_minor bigint, currency text, balance_after_minor bigint)
        ORDER BY x.n
    ), ops AS (
        INSERT INTO operations (operation_ref, kind, fingerprint, result)
        SELECT x.operation_ref, x.kind, x.fingerprint, x.result
        FROM jsonb_to_recordset(CAST(%(operations)s AS jsonb))
             AS x(operation_ref text, kind text, fingerprint text, result jsonb)
    )
    SELECT (SELECT count(*) FROM acc) AS updated, now() AS at
    """


def _recorded(account_id: str, raw: Sequence[Any]) -> ev.RecordedEvent:
    version, event_type, payload, prev_hash, digest = raw
    return ev.RecordedEvent(
        account_id, version, ev.event_from(event_type, payload), prev_hash, digest
    )


def _identity(row: Any) -> Account:
    return Account(
        account_id=str(row.account_id),
        owner_id=row.owner_id,
        currency=row.currency,
        kind=AccountKind(row.kind),
        open_ref=row.open_ref,
        created_at=row.created_at,
    )


def _projected(row: Any) -> Account:
    """An account as its read model shows it: balances, no history."""
    account = _identity(row)
    account.status = AccountStatus(row.status)
    account.total_minor = row.total_minor
    account.held_minor = row.held_minor
    account.version = row.version
    return account


def _hold_view(row: Any) -> HoldView:
    return HoldView(
        hold_id=str(row.hold_id),
        account_id=str(row.account_id),
        amount=Money(row.amount_minor, row.currency),
        captured=Money(row.captured_minor, row.currency),
        status=HoldStatus(row.status),
        expires_at=row.expires_at,
        reference=row.reference,
    )


def conversion_to_json(conversion: Conversion | None) -> dict[str, Any] | None:
    if conversion is None:
        return None
    rate = conversion.rate
    return {
        "base": rate.base,
        "quote": rate.quote,
        "numerator": str(rate.rate.numerator),
        "denominator": str(rate.rate.denominator),
        "source": rate.source,
        "as_of": rate.as_of.isoformat(),
        "source_minor": conversion.source.amount_minor,
        "target_minor": conversion.target.amount_minor,
    }


def conversion_from_json(data: dict[str, Any] | None) -> Conversion | None:
    if data is None:
        return None
    rate = FxRate(
        base=data["base"],
        quote=data["quote"],
        rate=Fraction(int(data["numerator"]), int(data["denominator"])),
        source=data["source"],
        as_of=datetime.fromisoformat(data["as_of"]),
    )
    return Conversion(
        rate, Money(data["source_minor"], rate.base), Money(data["target_minor"], rate.quote)
    )


def _stale(row: Any) -> bool:
    """Whether the history read missed events committed while this statement waited."""
    events = row.events
    last = events[-1][0] if events else (row.state["version"] if row.state else 0)
    return bool(last != row.locked_version)


def _event_row(recorded: ev.RecordedEvent) -> dict[str, Any]:
    return {
        "account_id": recorded.account_id,
        "version": recorded.version,
        "event_type": recorded.event_type,
        "payload": ev.payload_of(recorded.event),
        "prev_hash": recorded.prev_hash,
        "hash": recorded.hash,
    }


def _new_hold(account: Account, event: ev.AccountEvent) -> dict[str, Any] | None:
    if not isinstance(event, ev.HoldPlaced):
        return None
    return {
        "hold_id": event.hold_id,
        "account_id": account.account_id,
        "currency": account.currency,
        "amount_minor": event.amount_minor,
        "expires_at": event.expires_at,
        "reference": event.reference,
    }


def _hold_change(event: ev.AccountEvent) -> dict[str, Any] | None:
    match event:
        case ev.HoldCaptured():
            return {
                "hold_id": event.hold_id,
                "status": HoldStatus.CAPTURED.value,
                "captured_minor": event.captured_minor,
            }
        case ev.HoldReleased() | ev.HoldExpired():
            status = (
                HoldStatus.RELEASED if isinstance(event, ev.HoldReleased) else HoldStatus.EXPIRED
            )
            return {"hold_id": event.hold_id, "status": status.value, "captured_minor": 0}
    return None


def _transaction_row(txn: LedgerTransaction) -> dict[str, Any]:
    return {
        "transaction_id": txn.transaction_id,
        "operation_ref": txn.operation_ref,
        "kind": txn.kind.value,
        "description": txn.description,
        "conversion": conversion_to_json(txn.conversion),
    }


def _entry_row(n: int, txn: LedgerTransaction, entry: Entry) -> dict[str, Any]:
    return {
        "n": n,
        "entry_id": entry.entry_id,
        "transaction_id": txn.transaction_id,
        "account_id": entry.account_id,
        "amount_minor": entry.amount.amount_minor,
        "currency": entry.amount.currency,
        "balance_after_minor": entry.balance_after,
    }


@dataclass
class _Pending:
    """What a unit of work has decided to write, flushed in one statement at commit."""

    system: dict[str, SystemAccount] = field(default_factory=dict)
    accounts: dict[str, tuple[Account, int]] = field(default_factory=dict)
    transactions: list[LedgerTransaction] = field(default_factory=list)
    operations: list[Operation] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.system or self.accounts or self.transactions or self.operations)


def _dumps(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, separators=(",", ":"))


class WalletRepository:
    def __init__(
        self,
        conn: AsyncConnection,
        raw: RawConnection,
        *,
        track: Callable[[Account], None],
        known_system: set[str],
        snapshot_every: int,
    ) -> None:
        self._conn = conn
        self._raw = raw
        self._track = track
        self._known_system = known_system
        self._snapshot_every = snapshot_every
        self._pending = _Pending()
        self.created_system: list[str] = []

    # -- accounts ------------------------------------------------------------------------

    @boundary
    async def get(self, account_id: str) -> Account | None:
        """The read model of one account (no lock, no history)."""
        row = (
            await self._conn.execute(
                select(t.accounts).where(t.accounts.c.account_id == account_id)
            )
        ).first()
        return _projected(row) if row else None

    @boundary
    async def lock(
        self, account_ids: Iterable[str], *, operation_refs: Iterable[str] = ()
    ) -> tuple[dict[str, Account], dict[str, Operation]]:
        """Locks the accounts and loads each from its latest snapshot and later events, with
        the operations already recorded under any of `operation_refs`."""
        params = {"ids": sorted(set(account_ids)), "refs": sorted(set(operation_refs))}
        rows = await self._fetch(_LOCK_AND_LOAD, params)
        if any(_stale(row) for row in rows):
            rows = await self._fetch(_HISTORY, params)
        accounts = {}
        for row in rows:
            account = self._rebuild(row)
            if account is not None:
                accounts[account.account_id] = account
        if rows:
            found = rows[0].operations or []
        else:
            found = await self._operations(params["refs"]) if params["refs"] else []
        operations = {ref: Operation(ref, kind, fp, result) for ref, kind, fp, result in found}
        return accounts, operations

    async def _operations(self, refs: list[str]) -> list[tuple[str, str, str, Any]]:
        rows = await self._conn.execute(
            select(t.operations).where(t.operations.c.operation_ref.in_(refs))
        )
        return [(r.operation_ref, r.kind, r.fingerprint, r.result) for r in rows]

    async def _fetch(self, query: str, params: dict[str, Any]) -> list[Any]:
        async with self._raw.cursor(row_factory=namedtuple_row) as cursor:
            await cursor.execute(query, params)
            return await cursor.fetchall()

    def _rebuild(self, row: Any) -> Account | None:
        account = _identity(row)
        if account.kind is not AccountKind.CUSTOMER:
            return None
        if row.state is not None:
            account.restore(row.state)
        account.replay(_recorded(account.account_id, raw) for raw in row.events)
        self._track(account)
        return account

    @boundary
    async def find_opened(self, owner_id: str, open_ref: str) -> Account | None:
        query = select(t.accounts).where(
            t.accounts.c.owner_id == owner_id, t.accounts.c.open_ref == open_ref
        )
        row = (await self._conn.execute(query)).first()
        return _projected(row) if row else None

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
        """Writes everything pending in one statement (see _FLUSH)."""
        pending, self._pending = self._pending, _Pending()
        if not pending:
            return
        changed = [(a, previous) for a, previous in pending.accounts.values() if a.new_events]
        (row,) = await self._fetch(_FLUSH, self._flush_params(pending, changed))
        if row.updated != len(changed):
            raise VersionConflict("an account changed after it was loaded")
        for txn in pending.transactions:
            txn.created_at = row.at
        for account, _ in changed:
            account.mark_stored()
        self.created_system += list(pending.system)

    def _flush_params(
        self, pending: _Pending, changed: list[tuple[Account, int]]
    ) -> dict[str, str]:
        every = self._snapshot_every
        return {
            "system": _dumps(
                [
                    {"account_id": a.account_id, "currency": a.currency, "kind": a.kind.value,
                     "name": a.name}
                    for a in pending.system.values()
                ]
            ),
            "events": _dumps([_event_row(r) for a, _ in changed for r in a.new_events]),
            "accounts": _dumps(
                [
                    {"account_id": a.account_id, "previous": previous,
                     "total_minor": a.total_minor, "held_minor": a.held_minor,
                     "version": a.version, "status": a.status.value}
                    for a, previous in changed
                ]
            ),
            "snapshots": _dumps(
                [
                    {"account_id": a.account_id, "version": a.version, "state": a.snapshot()}
                    for a, previous in changed
                    if a.version // every > previous // every
                ]
            ),
            "new_holds": _dumps(
                [h for a, _ in changed for r in a.new_events if (h := _new_hold(a, r.event))]
            ),
            "hold_changes": _dumps(
                [h for a, _ in changed for r in a.new_events if (h := _hold_change(r.event))]
            ),
            "transactions": _dumps([_transaction_row(txn) for txn in pending.transactions]),
            "entries": _dumps(
                [
                    _entry_row(n, txn, e)
                    for n, (txn, e) in enumerate(
                        (txn, e) for txn in pending.transactions for e in txn.entries
                    )
                ]
            ),
            "operations": _dumps(
                [
                    {"operation_ref": o.operation_ref, "kind": o.kind,
                     "fingerprint": o.fingerprint, "result": o.result}
                    for o in pending.operations
                ]
            ),
        }  # fmt: skip

    # -- holds ---------------------------------------------------------------------------

    @boundary
    async def find_hold(self, hold_id: str) -> HoldView | None:
        row = (
            await self._conn.execute(select(t.holds).where(t.holds.c.hold_id == hold_id))
        ).first()
        return _hold_view(row) if row else None

    @boundary
    async def accounts_with_expired_holds(self, now: datetime, *, limit: int) -> list[str]:
        rows = await self._conn.execute(
            select(t.holds.c.account_id)
            .where(t.holds.c.status == HoldStatus.OPEN.value, t.holds.c.expires_at <= now)
            .group_by(t.holds.c.account_id)
            .limit(limit)
        )
        return [str(r.account_id) for r in rows]

    # -- journal -------------------------------------------------------------------------

    @boundary
    async def get_transaction(self, transaction_id: str) -> LedgerTransaction | None:
        header = (
            await self._conn.execute(
                select(t.ledger_transactions).where(
                    t.ledger_transactions.c.transaction_id == transaction_id
                )
            )
        ).first()
        if header is None:
            return None
        rows = (
            await self._conn.execute(
                select(t.ledger_entries)
                .where(t.ledger_entries.c.transaction_id == transaction_id)
                .order_by(t.ledger_entries.c.seq)
            )
        ).all()
        return LedgerTransaction(
            transaction_id=str(header.transaction_id),
            operation_ref=header.operation_ref,
            kind=TransactionKind(header.kind),
            description=header.description,
            conversion=conversion_from_json(header.conversion),
            created_at=header.created_at,
            entries=[
                Entry(
                    str(r.entry_id),
                    str(r.account_id),
                    Money(r.amount_minor, r.currency),
                    r.balance_after_minor,
                )
                for r in rows
            ],
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
        le = t.ledger_entries
        ids = [h.transaction_id for h in headers]
        rows = (
            await self._conn.execute(
                select(le).where(le.c.transaction_id.in_(ids)).order_by(le.c.seq)
            )
        ).all()
        entries: dict[str, list[Entry]] = {str(i): [] for i in ids}
        for r in rows:
            entries[str(r.transaction_id)].append(
                Entry(
                    str(r.entry_id),
                    str(r.account_id),
                    Money(r.amount_minor, r.currency),
                    r.balance_after_minor,
                )
            )
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

    @boundary
    async def list_entries(
        self, account_id: str, *, limit: int, after_seq: int
    ) -> list[tuple[int, Entry, str, datetime]]:
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
                Entry(
                    str(r.entry_id),
                    str(r.account_id),
                    Money(r.amount_minor, r.currency),
                    r.balance_after_minor,
                ),
                str(r.transaction_id),
                r.created_at,
            )
            for r in rows
        ]

    # -- FX rates ------------------------------------------------------------------------

    @boundary
    async def latest_rate(self, base: str, quote: str) -> FxRate | None:
        rates = t.fx_rates
        row = (
            await self._conn.execute(
                select(rates)
                .where(rates.c.base == base, rates.c.quote == quote)
                .order_by(rates.c.as_of.desc())
                .limit(1)
            )
        ).first()
        if row is None:
            return None
        return FxRate(
            row.base,
            row.quote,
            Fraction(int(row.numerator), int(row.denominator)),
            row.source,
            row.as_of,
        )

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

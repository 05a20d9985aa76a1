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
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from datetime import datetime
from fractions import Fraction
from typing import Any, ParamSpec, TypeVar

import sqlalchemy.exc
from sqlalchemy import insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from common.errors import ConcurrentUpdate, DependencyUnavailable
from common.money import Money
from wallet_service.adapters import tables as t
from wallet_service.domain import events as ev
from wallet_service.domain.errors import VersionConflict
from wallet_service.domain.fx import Conversion, FxRate
from wallet_service.domain.model import (
    Account,
    AccountKind,
    AccountStatus,
    Entry,
    HoldStatus,
    HoldView,
    LedgerTransaction,
    Operation,
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


def boundary(
    method: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        async with translated():
            return await method(*args, **kwargs)

    return wrapper


_LOCK = text(
    "SELECT account_id FROM accounts WHERE account_id = ANY(CAST(:ids AS uuid[]))"
    " ORDER BY account_id FOR NO KEY UPDATE"
)
# A fresh statement after the lock, so it sees everything the previous lock holder committed:
# each account's latest snapshot and the events after it.
_HISTORY = text(
    """
    WITH snap AS (
        SELECT DISTINCT ON (account_id) account_id, version, state
        FROM account_snapshots WHERE account_id = ANY(CAST(:ids AS uuid[]))
        ORDER BY account_id, version DESC
    )
    SELECT a.account_id, a.owner_id, a.currency, a.kind, a.open_ref, a.created_at,
           a.total_minor, a.held_minor, a.version AS projected_version, a.status,
           snap.state,
           coalesce((
               SELECT json_agg(json_build_array(e.version, e.event_type, e.payload,
                                                e.prev_hash, e.hash) ORDER BY e.version)
               FROM account_events e
               WHERE e.account_id = a.account_id AND e.version > coalesce(snap.version, 0)
           ), '[]') AS events
    FROM accounts a LEFT JOIN snap ON snap.account_id = a.account_id
    WHERE a.account_id = ANY(CAST(:ids AS uuid[]))
    """
)


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


class WalletRepository:
    def __init__(
        self,
        conn: AsyncConnection,
        *,
        track: Callable[[Account], None],
        known_system: set[str],
        snapshot_every: int,
    ) -> None:
        self._conn = conn
        self._track = track
        self._known_system = known_system
        self._snapshot_every = snapshot_every
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
    async def lock(self, account_ids: Iterable[str]) -> dict[str, Account]:
        """Locks the accounts, then loads each from its latest snapshot and later events."""
        ids = sorted(set(account_ids))
        await self._conn.execute(_LOCK, {"ids": ids})
        return await self._load(ids)

    async def _load(self, ids: list[str]) -> dict[str, Account]:
        loaded: dict[str, Account] = {}
        for row in (await self._conn.execute(_HISTORY, {"ids": ids})).all():
            account = _identity(row)
            if account.kind is not AccountKind.CUSTOMER:
                continue
            if row.state is not None:
                account.restore(row.state)
            account.replay(_recorded(account.account_id, raw) for raw in row.events)
            self._track(account)
            loaded[account.account_id] = account
        return loaded

    @boundary
    async def find_opened(self, owner_id: str, open_ref: str) -> Account | None:
        query = select(t.accounts).where(
            t.accounts.c.owner_id == owner_id, t.accounts.c.open_ref == open_ref
        )
        row = (await self._conn.execute(query)).first()
        return _projected(row) if row else None

    @boundary
    async def add(self, account: Account) -> None:
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
        await self._store([account], previous={account.account_id: 0})

    @boundary
    async def ensure_system(self, accounts: Iterable[SystemAccount]) -> None:
        """System accounts are created on first use; a process remembers which exist."""
        missing = [a for a in accounts if a.account_id not in self._known_system]
        if not missing:
            return
        await self._conn.execute(
            pg_insert(t.accounts).on_conflict_do_nothing(),
            [
                {
                    "account_id": a.account_id,
                    "owner_id": "paysuite",
                    "currency": a.currency,
                    "kind": a.kind.value,
                    "total_minor": 0,
                    "held_minor": 0,
                    "version": 0,
                    "open_ref": a.name,
                    "status": "open",
                }
                for a in missing
            ],
        )
        # Remembered only once this transaction commits (see WalletUnitOfWork.commit).
        self.created_system += [a.account_id for a in missing]

    @boundary
    async def save(self, accounts: Iterable[Account]) -> None:
        changed = [a for a in accounts if a.new_events]
        previous = {a.account_id: a.new_events[0].version - 1 for a in changed}
        await self._store(changed, previous=previous)

    async def _store(self, accounts: list[Account], *, previous: dict[str, int]) -> None:
        rows = [
            {
                "account_id": r.account_id,
                "version": r.version,
                "event_type": r.event_type,
                "payload": ev.payload_of(r.event),
                "prev_hash": r.prev_hash,
                "hash": r.hash,
            }
            for a in accounts
            for r in a.new_events
        ]
        if not rows:
            return
        await self._conn.execute(insert(t.account_events), rows)
        for account in accounts:
            await self._project(account, previous[account.account_id])
            account.mark_stored()

    async def _project(self, account: Account, previous_version: int) -> None:
        result = await self._conn.execute(
            update(t.accounts)
            .where(t.accounts.c.account_id == account.account_id)
            .where(t.accounts.c.version == previous_version)
            .values(
                total_minor=account.total_minor,
                held_minor=account.held_minor,
                version=account.version,
                status=account.status.value,
            )
        )
        if result.rowcount != 1:
            raise VersionConflict(f"account {account.account_id} changed meanwhile")
        for recorded in account.new_events:
            await self._project_hold(account, recorded.event)
        every = self._snapshot_every
        if account.version // every > previous_version // every:
            await self._conn.execute(
                insert(t.account_snapshots),
                [
                    {
                        "account_id": account.account_id,
                        "version": account.version,
                        "state": account.snapshot(),
                    }
                ],
            )

    async def _project_hold(self, account: Account, event: ev.AccountEvent) -> None:
        holds = t.holds
        match event:
            case ev.HoldPlaced():
                await self._conn.execute(
                    insert(holds),
                    [
                        {
                            "hold_id": event.hold_id,
                            "account_id": account.account_id,
                            "currency": account.currency,
                            "amount_minor": event.amount_minor,
                            "captured_minor": 0,
                            "status": HoldStatus.OPEN.value,
                            "expires_at": datetime.fromisoformat(event.expires_at),
                            "reference": event.reference,
                        }
                    ],
                )
            case ev.HoldCaptured():
                await self._set_hold(event.hold_id, HoldStatus.CAPTURED, event.captured_minor)
            case ev.HoldReleased():
                await self._set_hold(event.hold_id, HoldStatus.RELEASED, 0)
            case ev.HoldExpired():
                await self._set_hold(event.hold_id, HoldStatus.EXPIRED, 0)

    async def _set_hold(self, hold_id: str, status: HoldStatus, captured_minor: int) -> None:
        await self._conn.execute(
            update(t.holds)
            .where(t.holds.c.hold_id == hold_id)
            .values(status=status.value, captured_minor=captured_minor, updated_at=text("now()"))
        )

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
    async def add_transaction(self, txn: LedgerTransaction) -> None:
        # The database's clock stamps the journal; the caller's answer shows the same time a
        # replay of this operation will.
        txn.created_at = (
            await self._conn.execute(
                insert(t.ledger_transactions)
                .values(
                    transaction_id=txn.transaction_id,
                    operation_ref=txn.operation_ref,
                    kind=txn.kind.value,
                    description=txn.description,
                    conversion=conversion_to_json(txn.conversion),
                )
                .returning(t.ledger_transactions.c.created_at)
            )
        ).scalar_one()
        await self._conn.execute(
            insert(t.ledger_entries),
            [
                {
                    "entry_id": e.entry_id,
                    "transaction_id": txn.transaction_id,
                    "account_id": e.account_id,
                    "amount_minor": e.amount.amount_minor,
                    "currency": e.amount.currency,
                    "balance_after_minor": e.balance_after,
                }
                for e in txn.entries
            ],
        )

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

    # -- operations ----------------------------------------------------------------------

    @boundary
    async def find_operation(self, operation_ref: str) -> Operation | None:
        row = (
            await self._conn.execute(
                select(t.operations).where(t.operations.c.operation_ref == operation_ref)
            )
        ).first()
        if row is None:
            return None
        return Operation(row.operation_ref, row.kind, row.fingerprint, row.result)

    @boundary
    async def add_operation(self, operation: Operation) -> None:
        await self._conn.execute(
            insert(t.operations),
            [
                {
                    "operation_ref": operation.operation_ref,
                    "kind": operation.kind,
                    "fingerprint": operation.fingerprint,
                    "result": operation.result,
                }
            ],
        )

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

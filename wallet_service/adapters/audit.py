"""Proves the wallet's books from its own records, and rebuilds the read models from history.

`verify_ledger` checks, over the whole database: every journal transaction balances per
currency (invariant 1); every account's hash chain is intact and gap-free; replaying each
account's events gives its projected balances, status and holds, and every snapshot on the way
(invariant 3); the journal's entries for each account sum to its projected total; and no
available balance is negative, live or at any point of the replay (invariant 2).

`rebuild_projections` recomputes the balances and holds of every account from its events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from wallet_service.adapters.boundary import translated
from wallet_service.domain import events as ev
from wallet_service.domain.account import Account
from wallet_service.domain.holds import HoldView, hold_views


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    subject: str
    detail: str


@dataclass
class Report:
    accounts: int = 0
    events: int = 0
    transactions: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def add(self, check: str, subject: str, detail: str) -> None:
        self.findings.append(Finding(check, subject, detail))


_UNBALANCED = text(
    """
    SELECT t.transaction_id, e.currency, coalesce(sum(e.amount_minor), 0) AS total,
           count(e.seq) AS entries
    FROM ledger_transactions t LEFT JOIN ledger_entries e USING (transaction_id)
    GROUP BY t.transaction_id, e.currency
    HAVING coalesce(sum(e.amount_minor), 0) <> 0 OR count(e.seq) = 0
    """
)
_ORPHAN_ENTRIES = text(
    "SELECT count(*) FROM ledger_entries e WHERE NOT EXISTS"
    " (SELECT 1 FROM ledger_transactions t WHERE t.transaction_id = e.transaction_id)"
)
_CUSTOMERS = text(
    """
    SELECT a.account_id, a.owner_id, a.currency, a.total_minor, a.held_minor, a.version,
           a.status, coalesce(j.total, 0) AS journal_total
    FROM accounts a
    LEFT JOIN (SELECT account_id, sum(amount_minor) AS total FROM ledger_entries
               GROUP BY account_id) j USING (account_id)
    WHERE a.kind = 'customer' ORDER BY a.account_id
    """
)
_EVENTS = text(
    "SELECT account_id, version, event_type, payload, prev_hash, hash FROM account_events"
    " ORDER BY account_id, version"
)
_SNAPSHOTS = text("SELECT account_id, version, state FROM account_snapshots")
_HOLDS = text(
    "SELECT hold_id, account_id, currency, amount_minor, captured_minor, status, expires_at,"
    " reference FROM holds"
)


async def _histories(conn: AsyncConnection) -> AsyncIterator[tuple[str, list[ev.RecordedEvent]]]:
    """Each account's events, one account at a time, streamed from the database."""
    current: str | None = None
    batch: list[ev.RecordedEvent] = []
    async for row in await conn.stream(_EVENTS):
        account_id = str(row.account_id)
        if account_id != current:
            if current is not None:
                yield current, batch
            current, batch = account_id, []
        batch.append(
            ev.RecordedEvent(
                account_id,
                row.version,
                ev.event_from(row.event_type, row.payload),
                row.prev_hash,
                row.hash,
            )
        )
    if current is not None:
        yield current, batch


@dataclass
class _Replayed:
    account: Account
    views: dict[str, HoldView]


def _replay(
    row: Any,
    history: list[ev.RecordedEvent],
    snapshots: dict[int, dict[str, Any]],
    report: Report,
) -> _Replayed:
    account_id = str(row.account_id)
    account = Account(account_id, row.owner_id, row.currency)
    expected_prev, expected_version = ev.GENESIS_HASH, 1
    if history and history[0].version > 1 and history[0].version - 1 in snapshots:
        # An account opened before histories existed starts from its baseline snapshot.
        account.restore(snapshots[history[0].version - 1])
        expected_version = history[0].version
    for recorded in history:
        if recorded.version != expected_version:
            report.add("chain", account_id, f"version {expected_version} missing")
        if recorded.prev_hash != expected_prev:
            report.add("chain", account_id, f"version {recorded.version} does not link")
        if not recorded.intact():
            report.add("chain", account_id, f"version {recorded.version} was altered")
        account.replay([recorded])
        if account.total_minor - account.held_minor < 0:
            report.add("negative", account_id, f"available below zero at v{recorded.version}")
        snapshot = snapshots.get(recorded.version)
        if snapshot is not None and snapshot != account.snapshot():
            report.add("snapshot", account_id, f"snapshot v{recorded.version} differs from replay")
        expected_prev, expected_version = recorded.hash, recorded.version + 1
    return _Replayed(account, hold_views(account_id, row.currency, history))


def _compare(row: Any, replayed: _Replayed, holds: dict[str, Any], report: Report) -> None:
    account = replayed.account
    subject = account.account_id
    projected = (row.total_minor, row.held_minor, row.version, row.status)
    rebuilt = (account.total_minor, account.held_minor, account.version, account.status.value)
    if projected != rebuilt:
        report.add("projection", subject, f"projected {projected}, replay gives {rebuilt}")
    if row.journal_total != row.total_minor:
        report.add(
            "journal", subject, f"entries sum to {row.journal_total}, projection {row.total_minor}"
        )
    if row.total_minor - row.held_minor < 0:
        report.add("negative", subject, "available balance is below zero")
    for hold_id, view in replayed.views.items():
        stored = holds.get(hold_id)
        if stored is None or (stored.status, stored.captured_minor) != (
            view.status.value,
            view.captured.amount_minor,
        ):
            report.add("holds", subject, f"hold {hold_id} differs from replay")


async def verify_ledger(engine: AsyncEngine) -> Report:
    report = Report()
    async with translated(), engine.connect() as conn:
        for row in (await conn.execute(_UNBALANCED)).all():
            report.add(
                "balance",
                str(row.transaction_id),
                f"{row.entries} entries sum to {row.total} {row.currency or ''}".rstrip(),
            )
        orphans = (await conn.execute(_ORPHAN_ENTRIES)).scalar_one()
        if orphans:
            report.add("balance", "ledger_entries", f"{orphans} entries without a transaction")
        report.transactions = (
            await conn.execute(text("SELECT count(*) FROM ledger_transactions"))
        ).scalar_one()
        snapshots = await _snapshots(conn)
        holds: dict[str, Any] = {str(r.hold_id): r for r in (await conn.execute(_HOLDS)).all()}
        customers: dict[str, Any] = {
            str(r.account_id): r for r in (await conn.execute(_CUSTOMERS)).all()
        }
        report.accounts = len(customers)
        seen: set[str] = set()
        async for account_id, history in _histories(conn):
            customer = customers.get(account_id)
            report.events += len(history)
            if customer is None:
                report.add("chain", account_id, "events of an account that does not exist")
                continue
            seen.add(account_id)
            replayed = _replay(customer, history, snapshots.get(account_id, {}), report)
            _compare(customer, replayed, holds, report)
        for account_id in customers.keys() - seen:
            report.add("chain", account_id, "account without any event")
    return report


async def _snapshots(conn: AsyncConnection) -> dict[str, dict[int, dict[str, Any]]]:
    found: dict[str, dict[int, dict[str, Any]]] = {}
    for row in (await conn.execute(_SNAPSHOTS)).all():
        found.setdefault(str(row.account_id), {})[row.version] = row.state
    return found


@dataclass(frozen=True, slots=True)
class Rebuilt:
    accounts: int
    changed: list[str]


_LOCK_ONE = text(
    "SELECT account_id, owner_id, currency, total_minor, held_minor, version, status"
    " FROM accounts WHERE account_id = :id FOR NO KEY UPDATE"
)
_ONE_HISTORY = text(
    "SELECT account_id, version, event_type, payload, prev_hash, hash FROM account_events"
    " WHERE account_id = :id ORDER BY version"
)
_SET_BALANCES = text(
    "UPDATE accounts SET total_minor = :total, held_minor = :held, version = :version,"
    " status = :status WHERE account_id = :id"
)
_UPSERT_HOLD = text(
    """
    INSERT INTO holds (hold_id, account_id, currency, amount_minor, captured_minor, status,
                       expires_at, reference)
    VALUES (:hold_id, :account_id, :currency, :amount, :captured, :status, :expires_at,
            :reference)
    ON CONFLICT (hold_id) DO UPDATE SET captured_minor = excluded.captured_minor,
        status = excluded.status, updated_at = now()
    WHERE (holds.status, holds.captured_minor) IS DISTINCT FROM
          (excluded.status, excluded.captured_minor)
    """
)


async def rebuild_projections(engine: AsyncEngine) -> Rebuilt:
    """Recomputes balances and holds from the events, one account per transaction under its
    lock, so it is safe beside a running service. Reports the accounts whose projection
    differed from their history (none, unless something wrote behind the service's back)."""
    async with translated(), engine.connect() as conn:
        ids = [
            str(r.account_id)
            for r in await conn.execute(
                text("SELECT account_id FROM accounts WHERE kind = 'customer' ORDER BY 1")
            )
        ]
    changed = [account_id for account_id in ids if await _rebuild_one(engine, account_id)]
    return Rebuilt(len(ids), changed)


async def _rebuild_one(engine: AsyncEngine, account_id: str) -> bool:
    async with translated(), engine.begin() as conn:
        row = (await conn.execute(_LOCK_ONE, {"id": account_id})).one()
        history = [
            ev.RecordedEvent(
                account_id, r.version, ev.event_from(r.event_type, r.payload), r.prev_hash, r.hash
            )
            for r in await conn.execute(_ONE_HISTORY, {"id": account_id})
        ]
        snapshots = (await _snapshots_of(conn, account_id)) if history else {}
        account = Account(account_id, row.owner_id, row.currency)
        if history and history[0].version - 1 in snapshots:
            account.restore(snapshots[history[0].version - 1])
        account.replay(history)
        before = (row.total_minor, row.held_minor, row.version, row.status)
        after = (account.total_minor, account.held_minor, account.version, account.status.value)
        if before != after:
            await conn.execute(
                _SET_BALANCES,
                {
                    "id": account_id,
                    "total": account.total_minor,
                    "held": account.held_minor,
                    "version": account.version,
                    "status": account.status.value,
                },
            )
        await _rebuild_holds(conn, hold_views(account_id, row.currency, history).values())
        return before != after


async def _snapshots_of(conn: AsyncConnection, account_id: str) -> dict[int, dict[str, Any]]:
    rows = await conn.execute(
        text("SELECT version, state FROM account_snapshots WHERE account_id = :id"),
        {"id": account_id},
    )
    return {r.version: r.state for r in rows}


async def _rebuild_holds(conn: AsyncConnection, views: Iterable[HoldView]) -> None:
    params = [
        {
            "hold_id": v.hold_id,
            "account_id": v.account_id,
            "currency": v.amount.currency,
            "amount": v.amount.amount_minor,
            "captured": v.captured.amount_minor,
            "status": v.status.value,
            "expires_at": v.expires_at,
            "reference": v.reference,
        }
        for v in views
    ]
    if params:
        await conn.execute(_UPSERT_HOLD, params)

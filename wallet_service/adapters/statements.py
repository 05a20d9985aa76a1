"""The two hot statements, lock-and-load and flush, and the JSON rows flush writes.

They are plain SQL on the transaction's driver connection: SQLAlchemy Core's per-statement
work is a cost every batch pays, for nothing these two statements need (the tables stay
described in tables.py, checked by a test).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from wallet_service.adapters.rows import conversion_to_json
from wallet_service.domain import events as ev
from wallet_service.domain.account import Account
from wallet_service.domain.holds import HoldStatus
from wallet_service.domain.ledger import Entry, LedgerTransaction, Operation, SystemAccount

# One round trip locks the accounts and reads each one's latest snapshot, the events after
# it, and the operation already recorded under the caller's ref. Its snapshot predates any
# wait for the lock, so when the locked row (which PostgreSQL re-reads after the wait) is at
# a later version than the history read, a second, fresh read follows (HISTORY): the same
# statement with the lock already held, so only its `locked` CTE differs. Its arrays go in
# binary (%b): in text, psycopg quotes each element with regular expressions, in Python. The
# account id comes back as text, the form the domain holds: as a uuid, psycopg built a UUID
# object that str() then formatted in Python, for every account of every batch.
# `known` is the version of each account this process already holds the state of (0: none;
# see AccountCache), `hashes` its last event's hash: when the stored event at that version
# has that hash (the chain then vouches for every event before it: a database restored
# behind the process's back cannot pass for the history it folded), and the version is no
# older than the snapshot and no newer than the locked row, the read starts there instead,
# with no snapshot and only the events after it (usually none), so a posting no longer
# decodes and replays up to `snapshot_every` events of JSON.
_LOCK = """
    WITH locked AS (
        SELECT account_id, version FROM accounts
        WHERE account_id = ANY(CAST(%(ids)b AS uuid[]))
        ORDER BY account_id FOR NO KEY UPDATE
    ),"""
_LOCKED = """
    WITH locked AS (
        SELECT account_id, version FROM accounts WHERE account_id = ANY(CAST(%(ids)b AS uuid[]))
    ),"""
_LOAD = """
    snap AS (
        SELECT DISTINCT ON (account_id) account_id, version, state
        FROM account_snapshots WHERE account_id = ANY(CAST(%(ids)b AS uuid[]))
        ORDER BY account_id, version DESC
    ), known AS (
        SELECT * FROM unnest(CAST(%(ids)b AS uuid[]), CAST(%(known)b AS bigint[]),
                             CAST(%(hashes)b AS text[]))
                 AS k(account_id, version, hash)
    )
    SELECT a.account_id::text AS account_id, a.owner_id, a.currency, a.kind, a.open_ref,
           a.created_at,
           l.version AS locked_version, c.cached AS cached_version,
           CASE WHEN c.cached IS NULL THEN snap.state END AS state,
           coalesce((
               SELECT json_agg(json_build_array(e.version, e.event_type, e.payload,
                                                e.prev_hash, e.hash) ORDER BY e.version)
               FROM account_events e
               WHERE e.account_id = a.account_id
                 AND e.version > coalesce(c.cached, snap.version, 0)
           ), '[]') AS events,
           (SELECT json_agg(json_build_array(o.operation_ref, o.kind, o.fingerprint,
                                             o.result))
            FROM operations o WHERE o.operation_ref = ANY(CAST(%(refs)b AS text[]))) AS operations
    FROM locked l JOIN accounts a USING (account_id) LEFT JOIN snap USING (account_id)
         JOIN known k USING (account_id)
         CROSS JOIN LATERAL (
             SELECT CASE WHEN k.version > 0 AND k.version <= l.version
                              AND k.version >= coalesce(snap.version, 0)
                              AND EXISTS (
                                  SELECT FROM account_events h
                                  WHERE h.account_id = l.account_id AND h.version = k.version
                                    AND h.hash = k.hash)
                         THEN k.version END AS cached
         ) c
    """
LOCK_AND_LOAD = _LOCK + _LOAD
HISTORY = _LOCKED + _LOAD

# Everything a unit of work writes, in one statement: round trips to PostgreSQL are where a
# posting's time goes (design.md §9). Each CTE reads its rows from a JSON array; empty arrays
# write nothing. Foreign keys are checked at the end of the statement, so entries may refer to
# a system account or a transaction inserted beside them. The account UPDATE is conditional on
# the version the history was loaded at: `updated` short of the count is a lost race.
FLUSH = """
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


def stale(row: Any) -> bool:
    """Whether the history read missed events committed while this statement waited."""
    events = row.events
    if events:
        last = events[-1][0]
    elif row.cached_version is not None:
        last = row.cached_version
    else:
        last = row.state["version"] if row.state else 0
    return bool(last != row.locked_version)


def recorded_event(account_id: str, raw: Sequence[Any]) -> ev.RecordedEvent:
    """One element of a loaded row's `events` array."""
    version, event_type, payload, prev_hash, digest = raw
    return ev.RecordedEvent(
        account_id, version, ev.event_from(event_type, payload), prev_hash, digest
    )


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
class Pending:
    """What a unit of work has decided to write, flushed in one statement at commit."""

    system: dict[str, SystemAccount] = field(default_factory=dict)
    accounts: dict[str, tuple[Account, int]] = field(default_factory=dict)
    transactions: list[LedgerTransaction] = field(default_factory=list)
    operations: list[Operation] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.system or self.accounts or self.transactions or self.operations)


# One encoder for every flush (nine arrays each): json.dumps with any option builds a new
# JSONEncoder per call. The same text as json.dumps(rows, separators=(",", ":")).
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))


def _dumps(rows: list[dict[str, Any]]) -> str:
    return _COMPACT_JSON.encode(rows)


def flush_params(
    pending: Pending, changed: list[tuple[Account, int]], *, snapshot_every: int
) -> dict[str, str]:
    """FLUSH's parameters: each a JSON array of the rows its CTE writes. `changed` is every
    account with new events and the version it was loaded at; one at a multiple of
    `snapshot_every` since then gets a snapshot."""
    every = snapshot_every
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

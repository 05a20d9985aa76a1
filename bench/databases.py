"""What the bench reads straight from the service databases (it is a tool, not a service).

Durable timestamps from the databases rather than the client's clock: the webhook-to-ledger
lag starts when the gateway stored the provider's event and ends when the payment's
`completed` status change was written. Both come from this one machine's clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import psycopg

from bench.checks import StoredMovement, StoredPayment
from common import db
from common.bootstrap import ServiceDatabase
from common.config import Settings

_PAYMENTS_ON = (
    "SELECT payment_id::text, idempotency_key, destination_account_id::text, status,"
    " amount_minor FROM payments WHERE destination_account_id = ANY(%s::uuid[])"
)
_MOVEMENTS_ON = (
    "SELECT payment_id::text, idempotency_key, kind, coalesce(source_account_id::text, ''),"
    " coalesce(destination_account_id::text, ''), status, amount_minor FROM payments"
    " WHERE source_account_id = ANY(%s::uuid[]) OR destination_account_id = ANY(%s::uuid[])"
)
_COMPLETED_AT = (
    "SELECT payment_id::text, min(occurred_at) FROM payment_status_history"
    " WHERE to_status = 'completed' AND payment_id = ANY(%s::uuid[]) GROUP BY 1"
)
# The gateway knows a payment as its operation's `reference` (the payment id it was charged for).
_WEBHOOK_RECEIVED_AT = (
    "SELECT o.reference, min(e.received_at) FROM provider_events e"
    " JOIN operations o ON o.operation_id = e.operation_id"
    " WHERE e.event_type = 'charge.succeeded' AND o.reference = ANY(%s) GROUP BY 1"
)


_DEADLOCKS = "SELECT coalesce(sum(deadlocks), 0) FROM pg_stat_database WHERE datname = ANY(%s)"


def dsn(settings: Settings, database: ServiceDatabase) -> str:
    return db.libpq_dsn(database.url(settings))


async def stored_payments(dsn: str, account_ids: Sequence[str]) -> list[StoredPayment]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute(_PAYMENTS_ON, (list(account_ids),))
        return [StoredPayment(*row) for row in await cursor.fetchall()]


async def stored_movements(dsn: str, account_ids: Sequence[str]) -> list[StoredMovement]:
    """Every payment taking money from or bringing it to these accounts."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute(_MOVEMENTS_ON, (list(account_ids), list(account_ids)))
        return [StoredMovement(*row) for row in await cursor.fetchall()]


async def completed_at(dsn: str, payment_ids: Sequence[str]) -> dict[str, datetime]:
    return await _instants(dsn, _COMPLETED_AT, payment_ids)


async def webhook_received_at(dsn: str, payment_ids: Sequence[str]) -> dict[str, datetime]:
    return await _instants(dsn, _WEBHOOK_RECEIVED_AT, payment_ids)


async def _instants(dsn: str, query: str, ids: Sequence[str]) -> dict[str, datetime]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute(query, (list(ids),))
        return {str(key): at for key, at in await cursor.fetchall()}


async def deadlocks(dsn: str, databases: Sequence[str]) -> int:
    """Deadlocks PostgreSQL broke in these databases since its statistics began (a fresh
    suite's server: this run). Each stalled its transactions for `deadlock_timeout` (1 s)."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute(_DEADLOCKS, (list(databases),))
        row = await cursor.fetchone()
        return int(row[0]) if row is not None else 0

"""SQL persistence of operations and received provider events.

Locking rules: an existing operation changes only under `SELECT ... FOR UPDATE` of its row, so
the provider's answer to a request and the provider's events about it serialise, and the
second sees what the first did. A provider event is claimed by inserting its key first: a
concurrent delivery of the same event waits on that key and then finds it taken.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from psycopg.rows import namedtuple_row
from sqlalchemy import (
    Select,
    func,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import RawConnection, driver_connection, unique_violation_is_conflict
from common.errors import ConcurrentUpdate
from common.events import OutgoingEvent
from common.money import Money
from common.outbox import outbox_cte, outbox_document
from gateway_service.adapters import tables as t
from gateway_service.domain.model import (
    HistoryEntry,
    Operation,
    OperationKind,
    OperationStatus,
    ProviderEvent,
    ProviderEventStatus,
)


def _operation(row: Any) -> Operation:
    return Operation(
        operation_id=str(row.operation_id),
        kind=OperationKind(row.kind),
        status=OperationStatus(row.status),
        amount=Money(row.amount_minor, row.currency),
        idempotency_key=row.idempotency_key,
        instrument=row.payment_method,
        reference=row.reference,
        provider=row.provider,
        provider_reference=row.provider_reference,
        failure_reason=row.failure_reason,
        version=row.version,
        outcome_unknown=row.outcome_unknown,
        failover_clear=row.failover_clear,
        parent_operation_id=(
            str(row.parent_operation_id) if row.parent_operation_id is not None else None
        ),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _history(row: Any) -> HistoryEntry:
    return HistoryEntry(
        status=OperationStatus(row.status),
        provider=row.provider,
        provider_reference=row.provider_reference or "",
        failure_reason=row.failure_reason or "",
        outcome_unknown=row.outcome_unknown,
        recorded_at=row.recorded_at,
    )


# Plain SQL constants (no interpolation anywhere): every value is a bound parameter.
_SELECT = (
    "SELECT operation_id, kind, status, amount_minor, currency, idempotency_key,"
    " payment_method, reference, provider, provider_reference, failure_reason, version,"
    " created_at, updated_at, outcome_unknown, parent_operation_id, failover_clear"
    " FROM operations"
)
_GET = _SELECT + " WHERE operation_id = %s"
_GET_FOR_UPDATE = _GET + " FOR UPDATE"
_BY_KEY = _SELECT + " WHERE idempotency_key = %s"
# Batches pass arrays, never variable-length lists: one statement text for any batch size,
# so PostgreSQL's prepared statement is reused. Arrays go in binary (`%b`): psycopg's text
# form quotes and escapes each element in Python, about three times the CPU. Locks are taken
# in operation_id order, as lock_for_events takes them, so two batches (or a batch and the
# inbox) cannot deadlock.
_GET_MANY = _SELECT + " WHERE operation_id = ANY(%b::uuid[]) ORDER BY operation_id"
_GET_MANY_FOR_UPDATE = _GET_MANY + " FOR UPDATE"
_BY_KEYS = _SELECT + " WHERE idempotency_key = ANY(%b::text[])"
_INSERT_COLUMNS = (
    "operation_id",
    "kind",
    "status",
    "amount_minor",
    "currency",
    "idempotency_key",
    "payment_method",
    "reference",
    "provider",
    "provider_reference",
    "failure_reason",
    "version",
    "outcome_unknown",
    "parent_operation_id",
)
# The change and its history entry in one round trip; no row when the key is taken.
_INSERT_NEW = (
    "WITH changed AS (INSERT INTO operations (operation_id, kind, status, amount_minor,"
    " currency, idempotency_key, payment_method, reference, provider, provider_reference,"
    " failure_reason, version, outcome_unknown, parent_operation_id)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (idempotency_key) DO NOTHING RETURNING *)"
    " INSERT INTO operation_history (operation_id, version, status, provider,"
    " provider_reference, failure_reason, outcome_unknown)"
    " SELECT operation_id, version, status, provider, provider_reference, failure_reason,"
    " outcome_unknown FROM changed RETURNING recorded_at"
)
# Many operations and their first history entries in one statement, in the order given
# (add_many's key order); RETURNING names the rows inserted (a taken key inserts nothing, a
# key twice in the batch only its first row).
_INSERT_MANY = (
    "WITH changed AS (INSERT INTO operations (operation_id, kind, status, amount_minor,"
    " currency, idempotency_key, payment_method, reference, provider, provider_reference,"
    " failure_reason, version, outcome_unknown, parent_operation_id)"
    " SELECT operation_id, kind, status, amount_minor, currency, idempotency_key,"
    " payment_method, reference, provider, provider_reference, failure_reason, version,"
    " outcome_unknown, parent_operation_id"
    " FROM unnest(%b::uuid[], %b::text[], %b::text[], %b::bigint[], %b::text[],"
    " %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::bigint[],"
    " %b::boolean[], %b::uuid[]) WITH ORDINALITY AS o(operation_id, kind, status,"
    " amount_minor, currency, idempotency_key, payment_method, reference, provider,"
    " provider_reference, failure_reason, version, outcome_unknown, parent_operation_id,"
    " position) ORDER BY position"
    " ON CONFLICT (idempotency_key) DO NOTHING RETURNING *),"
    " history AS (INSERT INTO operation_history (operation_id, version, status, provider,"
    " provider_reference, failure_reason, outcome_unknown)"
    " SELECT operation_id, version, status, provider, provider_reference, failure_reason,"
    " outcome_unknown FROM changed)"
    " SELECT operation_id, created_at FROM changed"
)
_SAVE = (
    "WITH changed AS (UPDATE operations SET status = %s, provider = %s,"
    " provider_reference = %s, failure_reason = %s, version = %s, outcome_unknown = %s,"
    " failover_clear = %s, updated_at = now() WHERE operation_id = %s RETURNING *)"
    " INSERT INTO operation_history (operation_id, version, status, provider,"
    " provider_reference, failure_reason, outcome_unknown)"
    " SELECT operation_id, version, status, provider, provider_reference, failure_reason,"
    " outcome_unknown FROM changed RETURNING recorded_at"
)


# Many operations' saves (a batch's provider answers or webhooks) in ONE statement of one text
# for any batch size: the rows ride as arrays, and each updated row appends its history entry
# as _SAVE does, in the order given (WITH ORDINALITY). As in _SAVE a row is matched by id only
# (the caller holds its lock); an id with no row writes nothing, and the short count says so.
# With `unchanged_since`, a row is matched only while it is still at the version the caller
# last saw (`previous`): a save without the lock, which a concurrent change turns into nothing.
# That save takes its row locks first, in operation_id order (`locked`), as every other batch
# does: an UPDATE locks rows in whatever order its plan meets them, and against a webhook
# batch locking the same operations in order it deadlocked, which PostgreSQL breaks only
# after `deadlock_timeout` (1 s): a stall of the whole gateway's pipeline about once in
# twenty seconds of the bench's open loop.
def _save_many_ctes(*, unchanged_since: bool) -> str:
    previous = (", %b::bigint[]", ", previous") if unchanged_since else ("", "")
    guard = " AND o.version = i.previous" if unchanged_since else ""
    locked = (
        (
            " locked AS MATERIALIZED (SELECT o.operation_id FROM operations o JOIN input i"
            " USING (operation_id) WHERE o.version = i.previous ORDER BY o.operation_id"
            " FOR UPDATE OF o),",
            " AND o.operation_id IN (SELECT operation_id FROM locked)",
        )
        if unchanged_since
        else ("", "")
    )
    return (
        "input AS (SELECT * FROM unnest(%b::uuid[], %b::text[], %b::text[], %b::text[],"  # noqa: S608 - constant SQL pieces, no input
        f" %b::text[], %b::bigint[], %b::boolean[], %b::boolean[]{previous[0]}) WITH ORDINALITY"
        " AS i(operation_id, status, provider, provider_reference, failure_reason, version,"
        f" outcome_unknown, failover_clear{previous[1]}, position)),"
        f"{locked[0]}"
        " changed AS (UPDATE operations o SET status = i.status, provider = i.provider,"
        " provider_reference = i.provider_reference, failure_reason = i.failure_reason,"
        " version = i.version, outcome_unknown = i.outcome_unknown,"
        " failover_clear = i.failover_clear, updated_at = now()"
        f" FROM input i WHERE o.operation_id = i.operation_id{guard}{locked[1]} RETURNING o.*),"
        " history AS (INSERT INTO operation_history (operation_id, version, status, provider,"
        " provider_reference, failure_reason, outcome_unknown)"
        " SELECT c.operation_id, c.version, c.status, c.provider, c.provider_reference,"
        " c.failure_reason, c.outcome_unknown FROM changed c JOIN input i USING (operation_id)"
        " ORDER BY i.position RETURNING operation_id, recorded_at)"
    )


_SAVE_MANY_CTES = _save_many_ctes(unchanged_since=False)
_SAVE_MANY = (
    "WITH " + _SAVE_MANY_CTES + " SELECT operation_id, recorded_at FROM history"  # noqa: S608 - constant SQL pieces, no input
)
_SAVE_UNCHANGED = (
    "WITH "  # noqa: S608 - constant SQL pieces, no input
    + _save_many_ctes(unchanged_since=True)
    + " SELECT operation_id, recorded_at FROM history"
)


class OperationRepository:
    """Hot statements (get, insert, save) are plain SQL on the transaction's own driver
    connection, as in the payment service: SQLAlchemy's statement handling was most of a
    charge's CPU. The rest stays SQLAlchemy Core.

    Every operation it hands out or adds is registered with the unit of work (`track`), which
    harvests their events into the outbox at commit: no call site can forget one."""

    def __init__(
        self,
        conn: AsyncConnection,
        raw: RawConnection | None = None,
        *,
        track: Callable[[Operation], None],
    ) -> None:
        self._conn = conn
        self._raw = raw
        self._track = track

    async def get(self, operation_id: str, *, for_update: bool = False) -> Operation | None:
        if self._raw is None:
            query = select(t.operations).where(t.operations.c.operation_id == operation_id)
            return await self._one(query, for_update=for_update)
        return await self._raw_one(_GET_FOR_UPDATE if for_update else _GET, operation_id)

    async def find_by_idempotency_key(self, idempotency_key: str) -> Operation | None:
        if self._raw is None:
            query = select(t.operations).where(t.operations.c.idempotency_key == idempotency_key)
            return await self._one(query, for_update=False)
        return await self._raw_one(_BY_KEY, idempotency_key)

    async def get_many(
        self, operation_ids: Sequence[str], *, for_update: bool = False
    ) -> dict[str, Operation]:
        """The operations found among these ids; `for_update` locks them in id order."""
        query = _GET_MANY_FOR_UPDATE if for_update else _GET_MANY
        found = await self._raw_rows(query, list(operation_ids))
        return {operation.operation_id: operation for operation in found}

    async def find_by_idempotency_keys(self, keys: Sequence[str]) -> dict[str, Operation]:
        found = await self._raw_rows(_BY_KEYS, list(keys))
        return {operation.idempotency_key: operation for operation in found}

    async def _raw_one(self, query: str, value: str) -> Operation | None:
        assert self._raw is not None
        async with self._raw.cursor(row_factory=namedtuple_row) as cursor:
            await cursor.execute(query, (value,))
            row = await cursor.fetchone()
        return self._seen(row) if row is not None else None

    async def _raw_rows(self, query: str, values: list[str]) -> list[Operation]:
        raw = await self._driver()
        async with raw.cursor(row_factory=namedtuple_row) as cursor:
            await cursor.execute(query, (values,))
            rows = await cursor.fetchall()
        return [self._seen(row) for row in rows]

    async def find_by_provider_reference(
        self, provider: str, provider_reference: str, *, for_update: bool = False
    ) -> Operation | None:
        query = select(t.operations).where(
            t.operations.c.provider == provider,
            t.operations.c.provider_reference == provider_reference,
        )
        return await self._one(query, for_update=for_update)

    async def lock_for_events(
        self, references: Sequence[tuple[str, str]], operation_ids: Sequence[str]
    ) -> list[Operation]:
        """Every operation named by (provider, provider_reference) or by id, locked in
        operation_id order: two transactions locking overlapping sets cannot deadlock.

        Arrays, not IN lists, so the statement text is the same for every batch size and
        PostgreSQL's prepared statement is reused. Matching provider and reference separately
        may lock a few rows too many (a reference of one provider equal to another's); the
        caller matches exact pairs, and an extra lock is harmless."""
        if not references and not operation_ids:
            return []
        params = (
            sorted({provider for provider, _ in references}),
            [reference for _, reference in references],
            list(operation_ids),
        )
        raw = await self._driver()
        async with raw.cursor(row_factory=namedtuple_row) as cursor:
            await cursor.execute(_LOCK_FOR_EVENTS, params)
            rows = await cursor.fetchall()
        return [self._seen(row) for row in rows]

    async def refunded_minor(self, charge_operation_id: str) -> int:
        query = select(func.coalesce(func.sum(t.operations.c.amount_minor), 0)).where(
            t.operations.c.parent_operation_id == charge_operation_id,
            t.operations.c.kind == OperationKind.REFUND.value,
            t.operations.c.status != OperationStatus.FAILED.value,
        )
        return int((await self._conn.execute(query)).scalar_one())

    async def history(self, operation_id: str) -> list[HistoryEntry]:
        query = (
            select(t.operation_history)
            .where(t.operation_history.c.operation_id == operation_id)
            .order_by(t.operation_history.c.history_id)
        )
        return [_history(row) for row in await self._conn.execute(query)]

    async def add(self, operation: Operation) -> None:
        if not await self.add_new(operation):
            raise ConcurrentUpdate("an operation with this idempotency key exists")

    async def add_new(self, operation: Operation) -> bool:
        """Inserts the operation and its first history entry in one statement; False, writing
        nothing, when its idempotency key is taken (a concurrent insert waits for the other)."""
        self._track(operation)
        row = self._row(operation)
        params = [row[name] for name in _INSERT_COLUMNS]
        async with unique_violation_is_conflict():
            recorded_at = await self._scalar(_INSERT_NEW, params)
        if recorded_at is None:
            return False
        # now() is the transaction's time: the same instant for both rows.
        operation.created_at = operation.updated_at = recorded_at
        return True

    async def add_many(self, operations: Sequence[Operation]) -> set[str]:
        """Inserts the operations whose idempotency key is free, with their first history
        entries, in one statement; returns the ids it inserted. As add_new, a key a concurrent
        transaction holds waits for that one; a key twice in the batch goes to the first."""
        # Inserted in key order: two batches sharing keys wait on each other in the same
        # order instead of deadlocking.
        ordered = sorted(operations, key=lambda operation: operation.idempotency_key)
        for operation in ordered:
            self._track(operation)
        rows = [self._row(operation) for operation in ordered]
        params = [[row[name] for row in rows] for name in _INSERT_COLUMNS]
        raw = await self._driver()
        async with unique_violation_is_conflict():
            cursor = await raw.execute(_INSERT_MANY, params)
            inserted = {str(operation_id): at for operation_id, at in await cursor.fetchall()}
        for operation in ordered:
            if operation.operation_id in inserted:
                operation.created_at = operation.updated_at = inserted[operation.operation_id]
        return set(inserted)

    async def save(self, operation: Operation) -> None:
        """Updates the operation and appends its history entry in one statement. The provider
        reference is unique: a clash means another operation claimed it (ConcurrentUpdate)."""
        params = [
            operation.status.value,
            operation.provider,
            operation.provider_reference,
            operation.failure_reason,
            operation.version,
            operation.outcome_unknown,
            operation.failover_clear,
            operation.operation_id,
        ]
        async with unique_violation_is_conflict():
            updated_at = await self._scalar(_SAVE, params)
        if updated_at is None:
            raise ConcurrentUpdate(f"operation {operation.operation_id} vanished")
        operation.updated_at = updated_at

    async def save_many(self, operations: Sequence[Operation]) -> None:
        """`save` for many distinct operations in one statement. An operation whose row is
        missing makes the count short: nothing of the batch is kept (ConcurrentUpdate), and
        the caller reruns its requests alone."""
        if len(operations) < 2:
            for operation in operations:
                await self.save(operation)
            return
        raw = await self._driver()
        async with unique_violation_is_conflict():
            cursor = await raw.execute(_SAVE_MANY, _save_params(operations))
            saved = {str(operation_id): at for operation_id, at in await cursor.fetchall()}
        _saved(operations, saved)

    async def save_unchanged(self, operations: Sequence[tuple[Operation, int]]) -> set[str]:
        """Saves each (operation, version it was read at) whose row is still at that version,
        without a lock, in one statement; returns the ids saved. A row another writer moved
        on is left as it is, for the caller to decide again under the lock."""
        raw = await self._driver()
        params = _save_params([operation for operation, _ in operations])
        params.append([previous for _, previous in operations])
        async with unique_violation_is_conflict():
            cursor = await raw.execute(_SAVE_UNCHANGED, params)
            saved = {str(operation_id): at for operation_id, at in await cursor.fetchall()}
        for operation, _ in operations:
            if operation.operation_id in saved:
                operation.updated_at = saved[operation.operation_id]
        return set(saved)

    async def _scalar(self, query: str, params: list[Any]) -> Any:
        raw = await self._driver()
        cursor = await raw.execute(query, params)
        row = await cursor.fetchone()
        return row[0] if row is not None else None

    async def _driver(self) -> RawConnection:
        return self._raw if self._raw is not None else await driver_connection(self._conn)

    async def _one(self, query: Select[Any], *, for_update: bool) -> Operation | None:
        if for_update:
            query = query.with_for_update()
        row = (await self._conn.execute(query)).first()
        return self._seen(row) if row is not None else None

    def _seen(self, row: Any) -> Operation:
        operation = _operation(row)
        self._track(operation)
        return operation

    @staticmethod
    def _row(operation: Operation) -> dict[str, Any]:
        return {
            "operation_id": operation.operation_id,
            "kind": operation.kind.value,
            "status": operation.status.value,
            "amount_minor": operation.amount.amount_minor,
            "currency": operation.amount.currency,
            "idempotency_key": operation.idempotency_key,
            "payment_method": operation.instrument,
            "reference": operation.reference,
            "provider": operation.provider,
            "provider_reference": operation.provider_reference,
            "failure_reason": operation.failure_reason,
            "version": operation.version,
            "outcome_unknown": operation.outcome_unknown,
            "parent_operation_id": operation.parent_operation_id,
        }


def _save_params(operations: Sequence[Operation]) -> list[list[Any]]:
    """save_many's rows as arrays, one per column of _SAVE_MANY_CTES's input."""
    return [
        [operation.operation_id for operation in operations],
        [operation.status.value for operation in operations],
        [operation.provider for operation in operations],
        [operation.provider_reference for operation in operations],
        [operation.failure_reason for operation in operations],
        [operation.version for operation in operations],
        [operation.outcome_unknown for operation in operations],
        [operation.failover_clear for operation in operations],
    ]


def _saved(operations: Sequence[Operation], saved: dict[str, Any]) -> None:
    """Each saved operation's new updated_at; a short count means one vanished."""
    if len(saved) != len(operations):
        # The statement's writes stay in the transaction, which the caller must roll back.
        raise ConcurrentUpdate("an operation of the batch vanished")
    for operation in operations:
        operation.updated_at = saved[operation.operation_id]


# The inbox's statements are plain SQL too: it runs them once per batch of webhooks, and
# through SQLAlchemy Core their handling cost more than PostgreSQL's work.
_LOCK_FOR_EVENTS = (
    _SELECT + " WHERE (provider = ANY(%b::text[]) AND provider_reference = ANY(%b::text[]))"
    " OR operation_id = ANY(%b::uuid[]) ORDER BY operation_id FOR UPDATE"
)
_RECORDED = (
    "SELECT provider, provider_event_id, operation_id FROM provider_events"
    " WHERE provider = ANY(%b::text[]) AND provider_event_id = ANY(%b::text[])"
)
_RECORD = (
    "INSERT INTO provider_events (provider, provider_event_id, operation_id, event_type,"
    " provider_reference, status, occurred_at, raw_payload)"
    " SELECT provider, provider_event_id, operation_id, event_type, provider_reference, status,"
    " occurred_at, raw_payload FROM unnest(%b::text[], %b::text[], %b::uuid[], %b::text[],"
    " %b::text[], %b::text[], %b::timestamptz[], %b::bytea[]) WITH ORDINALITY AS e(provider,"
    " provider_event_id, operation_id, event_type, provider_reference, status, occurred_at,"
    " raw_payload, position) ORDER BY position"
    " ON CONFLICT (provider, provider_event_id) DO NOTHING RETURNING provider, provider_event_id"
)
# A batch's events and the operations they changed (as _SAVE_MANY) in one round trip
# instead of two. The two tables are apart, and the caller holds the operations' locks, so
# the order PostgreSQL runs the two in changes nothing; when the caller finds an event was
# recorded before, it rolls the whole transaction back, the operations' save with it.
# The operations' events ride in it too (`outbox_cte`, filtered to the operations it
# updated): the unit of work's outbox insert at commit was one more statement per batch.
_RECORD_SAVING = (
    "WITH recorded AS ("  # noqa: S608 - constant SQL pieces, no input
    + _RECORD
    + "), "
    + _SAVE_MANY_CTES
    + ", "
    + outbox_cte("SELECT CAST(operation_id AS text) FROM changed", document="%s")
    + " SELECT provider, provider_event_id, NULL::uuid, NULL::timestamptz FROM recorded"
    " UNION ALL SELECT NULL, NULL, operation_id, recorded_at FROM history"
)


class ProviderEventRepository:
    def __init__(
        self,
        conn: AsyncConnection,
        raw: RawConnection | None = None,
        *,
        take_outgoing: Callable[[Sequence[Operation]], list[OutgoingEvent]],
    ) -> None:
        # The unit of work's own event mapping (`SqlUnitOfWork.take_outgoing`), for `record`,
        # which writes the outbox rows of the operations it saves in its statement.
        self._take_outgoing = take_outgoing
        self._conn = conn
        self._raw = raw

    async def recorded(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str | None]:
        """Which of these (provider, provider_event_id) are recorded, with their operation."""
        if not keys:
            return {}
        params = (sorted({provider for provider, _ in keys}), [event_id for _, event_id in keys])
        raw = await self._driver()
        cursor = await raw.execute(_RECORDED, params)
        wanted = set(keys)
        return {
            (provider, event_id): str(operation_id) if operation_id is not None else None
            for provider, event_id, operation_id in await cursor.fetchall()
            if (provider, event_id) in wanted
        }

    async def record(
        self,
        records: Sequence[tuple[ProviderEvent, str | None, ProviderEventStatus]],
        *,
        saving: Sequence[Operation] = (),
    ) -> set[tuple[str, str]]:
        """Inserts the events with what became of them, in one statement; returns the keys it
        inserted. A key a concurrent transaction inserted meanwhile waits for it, then is left
        out (DO NOTHING). `saving`: operations (locked by the caller) saved in the same
        statement, as OperationRepository.save_many saves them, with the outbox rows of their
        events (taken from them through the unit of work, which reports them at commit
        without writing them again)."""
        if not records:
            if saving:
                raise ValueError("operations are saved only with the events that changed them")
            return set()
        params = [
            [event.provider for event, _, _ in records],
            [event.provider_event_id for event, _, _ in records],
            [operation_id for _, operation_id, _ in records],
            [event.event_type for event, _, _ in records],
            [event.provider_reference for event, _, _ in records],
            [status.value for _, _, status in records],
            [event.occurred_at for event, _, _ in records],
            [event.raw_payload for event, _, _ in records],
        ]
        raw = await self._driver()
        if not saving:
            cursor = await raw.execute(_RECORD, params)
            return {(provider, event_id) for provider, event_id in await cursor.fetchall()}
        async with unique_violation_is_conflict():
            outbox = outbox_document(self._take_outgoing(saving))
            cursor = await raw.execute(_RECORD_SAVING, [*params, *_save_params(saving), outbox])
            rows = await cursor.fetchall()
        _saved(saving, {str(op_id): at for _, _, op_id, at in rows if op_id is not None})
        return {(provider, event_id) for provider, event_id, op_id, _ in rows if op_id is None}

    async def _driver(self) -> RawConnection:
        return self._raw if self._raw is not None else await driver_connection(self._conn)

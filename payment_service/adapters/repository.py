"""SQL persistence of payments. Status changes are written with their history rows (the audit
trail) in the caller's transaction; a save checks the version it read, so a lost update is
impossible even without a row lock.

The statements of the deposit path are plain SQL on the driver (psycopg) connection of the
unit of work's transaction: through SQLAlchemy Core the same create-and-advance pair of
transactions cost 3.2 ms of CPU, as plain SQL 1.3 ms (measured on the embedded server), and
these run several times per payment. Reads for people (history, listings) stay on Core. The
SQLAlchemy tables remain the schema's one description (checked against the migrations).

The rows a statement writes many of (a batch's payments, their transitions and audit-trail
steps, the keys they answer) go as one JSON document each, unpacked by `jsonb_to_recordset`:
psycopg dumps every array parameter in Python, looking up a dumper per array and packing each
element, which cost 28 us an array on this machine, about 0.37 ms of client CPU for a
5-payment `_UPDATE_MANY` (25 arrays; text arrays cost three times that). The same rows as
JSON (the C encoder) cost 0.03 ms. Timestamps travel as ISO 8601 with their offset and
microseconds, which PostgreSQL reads back to the same instant.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from psycopg.rows import namedtuple_row
from psycopg.types.json import Jsonb
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import RawConnection, unique_violation_is_conflict
from common.errors import ConcurrentUpdate
from common.events import OutgoingEvent
from common.ids import new_id
from common.money import Money
from common.outbox import outbox_cte, outbox_document
from common.streams import mark_processed
from payment_service.adapters import tables as t
from payment_service.domain.errors import ReviewAlreadyResolved
from payment_service.domain.model import Payment
from payment_service.domain.requests import ClaimAnswer, IdempotencyClaim, PaymentFilter
from payment_service.domain.review import (
    Decision,
    Resolution,
    ReviewCase,
    ReviewOpening,
    ReviewReason,
    ReviewStatus,
)
from payment_service.domain.saga import HoldState, SagaState
from payment_service.domain.status import PaymentKind, PaymentStatus
from payment_service.domain.trail import PaymentStep, StatusChange


def _payment(row: Any) -> Payment:
    return Payment(
        payment_id=str(row.payment_id),
        kind=PaymentKind(row.kind),
        status=PaymentStatus(row.status),
        amount=Money(row.amount_minor, row.currency),
        idempotency_key=row.idempotency_key,
        source_account_id=str(row.source_account_id or ""),
        destination_account_id=str(row.destination_account_id or ""),
        payment_method=row.payment_method,
        failure_reason=row.failure_reason,
        gateway_operation_id=row.gateway_operation_id,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
        steps=row.steps,
        parent_payment_id=str(row.parent_payment_id or ""),
        saga=_saga(row.saga),
    )


def _saga(data: Any) -> SagaState:
    fields = dict(data or {})
    if "hold" in fields:
        fields["hold"] = HoldState(fields["hold"])
    return SagaState(**fields)


_FRESH_SAGA = SagaState()
_SAGA_FIELDS = tuple(f.name for f in dataclasses.fields(SagaState))


def _saga_data(saga: SagaState) -> dict[str, Any]:
    """Only what differs from a fresh saga: most payments store next to nothing."""
    return {
        name: getattr(saga, name)
        for name in _SAGA_FIELDS
        if getattr(saga, name) != getattr(_FRESH_SAGA, name)
    }


_json = json.JSONEncoder().encode


_SELECT = (
    "SELECT payment_id, seq, kind, status, amount_minor, currency, idempotency_key,"
    " source_account_id, destination_account_id, payment_method, failure_reason,"
    " gateway_operation_id, version, created_at, updated_at, steps, parent_payment_id, saga"
    " FROM payments"
)
_GET = _SELECT + " WHERE payment_id = %s"
_GET_FOR_UPDATE = _GET + " FOR UPDATE"
# Many payments at once (a group commit's steps): locked in one order everywhere, so two
# batches never wait on each other in a circle.
_GET_MANY = _SELECT + " WHERE payment_id = ANY(%b::uuid[])"
_LOCK_MANY = _GET_MANY + " ORDER BY payment_id FOR UPDATE"
# _LOCK_MANY that also records the events a group commit's reactions react to as processed
# (as common.streams.mark_many_processed, for any number of consumers): ONE statement where
# the batch sent the lock and then an insert per consumer. Only the events of payments found
# and locked are recorded, as a step alone records its event under its payment's lock and
# not at all for a payment that does not exist. Every row carries the same list: the
# (consumer, event id) pairs recorded now for the first time, whose effects the steps apply.
_LOCK_MANY_MARKING = (
    "WITH locked AS MATERIALIZED ("  # noqa: S608 - constant SQL pieces, no input
    + _SELECT
    + " WHERE payment_id = ANY(%(ids)b::uuid[]) ORDER BY payment_id FOR UPDATE),"
    " marked AS (INSERT INTO processed_events (consumer, event_id)"
    " SELECT e.consumer, e.event_id FROM jsonb_to_recordset(%(events)s::jsonb)"
    " AS e(payment_id uuid, consumer text, event_id uuid)"
    " WHERE e.payment_id IN (SELECT payment_id FROM locked)"
    " ON CONFLICT DO NOTHING RETURNING consumer, event_id)"
    " SELECT locked.*, (SELECT json_agg(json_build_array(consumer, event_id)) FROM marked)"
    " AS first_seen FROM locked"
)
_CLAIM_KEY = (
    "INSERT INTO idempotency_keys (caller, key, fingerprint, payment_id, response_version)"
    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
_CLAIMED = (
    "SELECT fingerprint, payment_id, response_version, error_reason, error_message"
    " FROM idempotency_keys WHERE caller = %s AND key = %s"
)
# `jsonb_to_recordset` is estimated at 100 rows whatever it holds: joined to a table as is,
# the planner hashes it and scans the whole table (seen in EXPLAIN on 9,600 payments). The
# rows it names are looked up by `= ANY(ARRAY(...))` instead, an index scan.
_ANSWER_CLAIMS = (
    "WITH a AS (SELECT * FROM jsonb_to_recordset(%s::jsonb)"
    " AS a(payment_id uuid, version integer, error_reason text, error_message text))"
    " UPDATE idempotency_keys AS k SET response_version = a.version,"
    " error_reason = a.error_reason, error_message = a.error_message FROM a"
    " WHERE k.payment_id = ANY(ARRAY(SELECT payment_id FROM a))"
    " AND k.payment_id = a.payment_id AND k.response_version IS NULL"
)
# Payments whose saga may have stopped between two steps, oldest first; a row another replica
# is resuming right now is skipped rather than waited for. One resumed lately (its time is in
# the saga state, so that updated_at keeps saying when the payment last changed) waits.
_STALLED = (
    "SELECT payment_id FROM payments WHERE status IN ('initiated', 'refunding')"
    " AND updated_at < now() - %s"
    " AND COALESCE((saga->>'resumed_at')::timestamptz, updated_at) < now() - %s"
    " ORDER BY updated_at LIMIT %s FOR UPDATE SKIP LOCKED"
)
_PURGE_CLAIMS = (
    "DELETE FROM idempotency_keys WHERE ctid IN (SELECT ctid FROM idempotency_keys"
    " WHERE created_at < now() - %s LIMIT %s)"
)
# A payment's row, the transitions and the audit-trail steps recorded since it was loaded are
# written by ONE statement: the history and steps ride as arrays (unnest) in data-modifying
# CTEs. One row per transition or step used to be its own statement (executemany), about 11 per
# deposit; the statement text no longer depends on how many rows there are, so it stays
# prepared. The CTEs insert only when the payment's own write happened (`EXISTS (... FROM
# written)`), so a lost optimistic-concurrency race writes nothing and the count says so.
_HISTORY_CTES = (
    " history AS (INSERT INTO payment_status_history (payment_id, sequence, from_status,"
    " to_status, reason, occurred_at)"
    " SELECT %(payment_id)s, h.sequence, h.from_status, h.to_status, h.reason, h.occurred_at"
    " FROM jsonb_to_recordset(%(history)s::jsonb) AS h(sequence bigint, from_status text,"
    " to_status text, reason text, occurred_at timestamptz)"
    " WHERE EXISTS (SELECT 1 FROM written)),"
    " audit AS (INSERT INTO payment_steps (payment_id, step, event_type, occurred_at, data, error)"
    " SELECT %(payment_id)s, s.step, s.event_type, s.occurred_at, s.data, s.error"
    " FROM jsonb_to_recordset(%(audit)s::jsonb) AS s(step bigint, event_type text,"
    " occurred_at timestamptz, data jsonb, error text)"
    " WHERE EXISTS (SELECT 1 FROM written))"
    " SELECT count(*) FROM written"
)
_INSERT = (
    "WITH written AS (INSERT INTO payments (payment_id, kind, idempotency_key, amount_minor,"  # noqa: S608 - constant SQL pieces, no input
    " currency, source_account_id, destination_account_id, payment_method, created_at,"
    " parent_payment_id, status, failure_reason, gateway_operation_id, version, updated_at,"
    " steps, saga) VALUES (%(payment_id)s, %(kind)s, %(idempotency_key)s, %(amount_minor)s,"
    " %(currency)s, %(source)s, %(destination)s, %(method)s, %(created_at)s, %(parent)s,"
    " %(status)s, %(failure_reason)s, %(operation_id)s, %(version)s, %(updated_at)s,"
    " %(steps)s, %(saga)s) RETURNING 1)," + _HISTORY_CTES
)
_UPDATE = (
    "WITH written AS (UPDATE payments SET status = %(status)s, failure_reason ="  # noqa: S608 - constant SQL pieces, no input
    " %(failure_reason)s, gateway_operation_id = %(operation_id)s, version = %(version)s,"
    " updated_at = %(updated_at)s, steps = %(steps)s, saga = %(saga)s"
    " WHERE payment_id = %(payment_id)s AND version = %(expected_version)s"
    " AND steps = %(expected_steps)s RETURNING 1)," + _HISTORY_CTES
)
# The transitions and audit-trail steps of many payments, as arrays keyed by payment, inserted
# for the payments the statement's `written` names.
_MANY_TRAIL_CTES = (
    " history AS (INSERT INTO payment_status_history (payment_id, sequence, from_status,"
    " to_status, reason, occurred_at)"
    " SELECT h.payment_id, h.sequence, h.from_status, h.to_status, h.reason, h.occurred_at"
    " FROM jsonb_to_recordset(%(history)s::jsonb) AS h(payment_id uuid, sequence bigint,"
    " from_status text, to_status text, reason text, occurred_at timestamptz)"
    " WHERE h.payment_id IN (SELECT payment_id FROM written)),"
    " audit AS (INSERT INTO payment_steps (payment_id, step, event_type, occurred_at, data, error)"
    " SELECT s.payment_id, s.step, s.event_type, s.occurred_at, s.data, s.error"
    " FROM jsonb_to_recordset(%(audit)s::jsonb) AS s(payment_id uuid, step bigint,"
    " event_type text, occurred_at timestamptz, data jsonb, error text)"
    " WHERE s.payment_id IN (SELECT payment_id FROM written))"
)
# Many payments' writes (a group commit's steps) in ONE statement: the rows, transitions and
# audit-trail steps of every payment ride as arrays, the latter two keyed by payment, and so
# do the idempotency keys the steps answer (as _ANSWER_CLAIMS; a statement of its own was
# one in eight of a transfer's) and the outbox rows of the payments' events (`outbox_cte`;
# the unit of work's outbox insert at commit was another statement per batch). As in
# _UPDATE, a row whose version or step count moved is not written, nor are its transitions,
# steps or outbox rows, and the count says so (the caller then fails the whole batch, rolled
# back, which is rerun alone).
_UPDATE_MANY = (
    "WITH input AS (SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb) AS i(payment_id uuid,"  # noqa: S608 - constant SQL pieces, no input
    " status text, failure_reason text, operation_id text, version bigint,"
    " updated_at timestamptz, steps bigint, saga jsonb, expected_version bigint,"
    " expected_steps bigint)),"
    " written AS (UPDATE payments p SET status = i.status, failure_reason = i.failure_reason,"
    " gateway_operation_id = i.operation_id, version = i.version, updated_at = i.updated_at,"
    " steps = i.steps, saga = i.saga FROM input i"
    " WHERE p.payment_id = ANY(ARRAY(SELECT payment_id FROM input)) AND p.payment_id = i.payment_id"
    " AND p.version = i.expected_version AND p.steps = i.expected_steps RETURNING p.payment_id),"
    + _MANY_TRAIL_CTES
    + ", answers AS (SELECT * FROM jsonb_to_recordset(%(answers)s::jsonb) AS a(payment_id uuid,"
    " version integer, error_reason text, error_message text)),"
    " answered AS (UPDATE idempotency_keys AS k SET response_version = a.version,"
    " error_reason = a.error_reason, error_message = a.error_message FROM answers a"
    " WHERE k.payment_id = ANY(ARRAY(SELECT payment_id FROM answers))"
    " AND k.payment_id = a.payment_id AND k.response_version IS NULL), "
    + outbox_cte("SELECT CAST(payment_id AS text) FROM written")
    + " SELECT count(*) FROM written"
)
# A group commit's creates in ONE statement: the keys claimed, and the payments whose key was
# free inserted with their transitions and steps (one statement each used to be a tenth of the
# payment service's statements). A key already taken inserts no payment; RETURNING names the
# keys claimed now, and the caller reads the earlier claim of each other one. Inserted in the
# order given, so `seq` follows it as it did one insert at a time.
_ADD_CLAIMED = (
    "WITH claimed AS (INSERT INTO idempotency_keys (caller, key, fingerprint, payment_id,"  # noqa: S608 - constant SQL pieces, no input
    " response_version) SELECT k.caller, k.key, k.fingerprint, k.payment_id,"
    " k.response_version FROM jsonb_to_recordset(%(keys)s::jsonb) AS k(caller text, key text,"
    " fingerprint text, payment_id uuid, response_version bigint)"
    " ON CONFLICT DO NOTHING RETURNING caller, key, payment_id),"
    " written AS (INSERT INTO payments (payment_id, kind, idempotency_key, amount_minor,"
    " currency, source_account_id, destination_account_id, payment_method, created_at,"
    " parent_payment_id, status, failure_reason, gateway_operation_id, version, updated_at,"
    " steps, saga) SELECT p.payment_id, p.kind, p.idempotency_key, p.amount_minor, p.currency,"
    " p.source, p.destination, p.method, p.created_at, p.parent, p.status, p.failure_reason,"
    " p.operation_id, p.version, p.updated_at, p.steps, p.saga"
    " FROM jsonb_to_recordset(%(rows)s::jsonb) AS p(payment_id uuid, kind text,"
    " idempotency_key text, amount_minor bigint, currency text, source uuid, destination uuid,"
    " method text, created_at timestamptz, parent uuid, status text, failure_reason text,"
    " operation_id text, version bigint, updated_at timestamptz, steps bigint, saga jsonb,"
    " position integer)"
    " WHERE p.payment_id IN (SELECT payment_id FROM claimed) ORDER BY p.position"
    " RETURNING payment_id)," + _MANY_TRAIL_CTES + " SELECT caller, key FROM claimed"
)
# _ADD_CLAIMED with the new payments' outbox rows: a group commit's creates as one statement,
# which is their whole transaction (`PaymentUnitOfWork.create`).
_CREATE = _ADD_CLAIMED.replace(
    " SELECT caller, key FROM claimed",
    ", "  # noqa: S608 - constant SQL pieces, no input
    + outbox_cte("SELECT CAST(payment_id AS text) FROM written")
    + " SELECT caller, key FROM claimed",
)
_STEPS = (
    "SELECT step, event_type, occurred_at, data, error FROM payment_steps"
    " WHERE payment_id = %s ORDER BY step"
)
# A reason to look at a payment: opens its case, or (one is open already: the partial unique
# index) adds to that case's evidence. Runs after the payment's row is locked by its update.
_OPEN_CASE = (
    "INSERT INTO review_cases (case_id, payment_id, reason_code, reason, opened_at, status,"
    " evidence) VALUES (%s, %s, %s, %s, %s, 'open', %s)"
    " ON CONFLICT (payment_id) WHERE status = 'open'"
    " DO UPDATE SET evidence = review_cases.evidence || EXCLUDED.evidence"
)
# Literal column lists (not interpolated), so every statement reads whole.
_CASE = (
    "SELECT seq, case_id, payment_id, reason_code, reason, opened_at, status, evidence,"
    " resolution, note, resolved_by, resolved_at FROM review_cases"
    " WHERE case_id = %s"
)
_OPEN_CASE_OF = (
    "SELECT seq, case_id, payment_id, reason_code, reason, opened_at, status, evidence,"
    " resolution, note, resolved_by, resolved_at FROM review_cases"
    " WHERE payment_id = %s AND status = 'open'"
)
_LIST_CASES = (
    "SELECT seq, case_id, payment_id, reason_code, reason, opened_at, status, evidence,"
    " resolution, note, resolved_by, resolved_at FROM review_cases"
    " WHERE status = %s AND seq > %s ORDER BY seq LIMIT %s"
)
# A case, open or resolved, that already holds this mismatch's evidence (its key).
_CASE_WITH_KEY = (
    "SELECT seq, case_id, payment_id, reason_code, reason, opened_at, status, evidence,"
    " resolution, note, resolved_by, resolved_at FROM review_cases"
    " WHERE payment_id = %s AND evidence @> %s ORDER BY seq LIMIT 1"
)
# Only an open case is resolved: a racer that skipped the row lock still cannot resolve twice.
_RESOLVE_CASE = (
    "UPDATE review_cases SET status = %s, resolution = %s, note = %s, resolved_by = %s,"
    " resolved_at = %s WHERE case_id = %s AND status = 'open' AND resolution IN ('', %s)"
)
# An open case's `resolution` is the claim of the resolution being carried out ('' for none).
_CLAIM_CASE = "UPDATE review_cases SET resolution = %s WHERE case_id = %s AND status = 'open'"
_ALARM_CASES = (
    "UPDATE review_cases SET alarmed_at = %s WHERE case_id IN (SELECT case_id FROM review_cases"
    " WHERE status = 'open' AND opened_at < %s AND (alarmed_at IS NULL OR alarmed_at < %s)"
    " ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED)"
    " RETURNING seq, case_id, payment_id, reason_code, reason, opened_at, status, evidence,"
    " resolution, note, resolved_by, resolved_at"
)


# A payment's columns, its new transitions and its new audit-trail steps (`_written`).
_Written = tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]


def _one_payment(
    columns: dict[str, Any], history: list[dict[str, Any]], audit: list[dict[str, Any]]
) -> dict[str, Any]:
    """The parameters of `_INSERT` or `_UPDATE`: one payment's columns as they are."""
    return {
        **columns,
        "saga": Jsonb(columns["saga"]),
        "history": _json(history),
        "audit": _json(audit),
    }


def _json_columns(columns: dict[str, Any]) -> dict[str, Any]:
    """A payment's columns as a row of a JSON document (timestamps in ISO 8601)."""
    row = dict(columns)
    row["updated_at"] = columns["updated_at"].isoformat()
    if "created_at" in columns:
        row["created_at"] = columns["created_at"].isoformat()
    return row


def _answers_json(answers: Sequence[ClaimAnswer]) -> str:
    return _json(
        [
            {
                "payment_id": a.payment_id,
                "version": a.version,
                "error_reason": a.error_reason,
                "error_message": a.error_message,
            }
            for a in answers
        ]
    )


def _evidence_json(opening: ReviewOpening) -> dict[str, Any]:
    data: dict[str, Any] = {
        "reason_code": opening.reason_code.value,
        "reason": opening.reason,
        "source": opening.source,
        "occurred_at": opening.occurred_at.isoformat(),
    }
    if opening.key:
        data["key"] = opening.key
    if opening.details:
        data["details"] = dict(opening.details)
    return data


def _evidence(payment_id: str, data: Any) -> ReviewOpening:
    return ReviewOpening(
        payment_id,
        ReviewReason(data["reason_code"]),
        data["reason"],
        data["source"],
        datetime.fromisoformat(data["occurred_at"]),
        details=dict(data.get("details") or {}),
        key=data.get("key", ""),
    )


def _case(row: Any) -> ReviewCase:
    payment_id = str(row.payment_id)
    decision = None
    if row.resolved_at is not None:
        decision = Decision(Resolution(row.resolution), row.note, row.resolved_by, row.resolved_at)
    return ReviewCase(
        case_id=str(row.case_id),
        payment_id=payment_id,
        reason_code=ReviewReason(row.reason_code),
        reason=row.reason,
        opened_at=row.opened_at,
        status=ReviewStatus(row.status),
        evidence=[_evidence(payment_id, item) for item in row.evidence or ()],
        decision=decision,
        claimed=(Resolution(row.resolution) if row.status == "open" and row.resolution else None),
    )


class PaymentRepository:
    """Every payment it hands out or adds is registered with the unit of work (`track`), which
    harvests their events into the outbox at commit: no call site can forget one. `save_many`
    takes the events of the payments it writes earlier (`take_outgoing`), for its own
    statement to write their outbox rows."""

    def __init__(
        self,
        conn: AsyncConnection,
        raw: RawConnection,
        *,
        track: Callable[[Payment], None],
        take_outgoing: Callable[[Sequence[Payment]], builtins.list[OutgoingEvent]],
    ) -> None:
        self._conn = conn
        self._raw = raw
        self._track = track
        # The unit of work's own event mapping, for `save_many`, which writes the outbox rows
        # of the payments it saves in its statement (`SqlUnitOfWork.take_outgoing`).
        self._take_outgoing = take_outgoing

    async def get(self, payment_id: str, *, for_update: bool = False) -> Payment | None:
        return await self._one(_GET_FOR_UPDATE if for_update else _GET, payment_id)

    async def get_many(
        self, payment_ids: Sequence[str], *, for_update: bool = False
    ) -> dict[str, Payment]:
        async with self._raw.cursor(row_factory=namedtuple_row) as cursor:
            await cursor.execute(_LOCK_MANY if for_update else _GET_MANY, (list(payment_ids),))
            rows = await cursor.fetchall()
        found = (self._seen(row) for row in rows)
        return {payment.payment_id: payment for payment in found if payment is not None}

    async def lock_many(
        self, payment_ids: Sequence[str], reactions: Mapping[str, tuple[str, str]]
    ) -> tuple[dict[str, Payment], set[tuple[str, str]]]:
        """`get_many(payment_ids, for_update=True)`, and the events the payments found react
        to (`reactions`: payment id to (consumer, event id)) recorded processed, in one
        statement; answers the payments and the (consumer, event id) pairs recorded now for
        the first time."""
        if not reactions:
            return await self.get_many(payment_ids, for_update=True), set()
        events = [
            {"payment_id": payment_id, "consumer": consumer, "event_id": event_id}
            for payment_id, (consumer, event_id) in reactions.items()
        ]
        async with self._raw.cursor(row_factory=namedtuple_row) as cursor:
            await cursor.execute(
                _LOCK_MANY_MARKING, {"ids": list(payment_ids), "events": _json(events)}
            )
            rows: builtins.list[Any] = await cursor.fetchall()
        # The same list on every row; no row when no payment was found, nor anything recorded.
        recorded = rows[0].first_seen if rows else None
        first_seen = {(str(consumer), str(event_id)) for consumer, event_id in recorded or ()}
        found = (self._seen(row) for row in rows)
        locked = {payment.payment_id: payment for payment in found if payment is not None}
        return locked, first_seen

    async def claim_key(self, claim: IdempotencyClaim) -> IdempotencyClaim | None:
        cursor = await self._raw.execute(
            _CLAIM_KEY,
            (claim.caller, claim.key, claim.fingerprint, claim.payment_id, claim.response_version),
        )
        if cursor.rowcount == 1:
            return None
        return await self._prior_claim(claim)

    async def _prior_claim(self, claim: IdempotencyClaim) -> IdempotencyClaim:
        """The earlier claim that took `claim`'s key."""
        prior = await self.claimed(claim.caller, claim.key)
        if prior is None:  # claimed and purged in between: a new claim next time
            raise ConcurrentUpdate(f"idempotency key {claim.key!r} changed concurrently")
        return prior

    async def claimed(self, caller: str, key: str) -> IdempotencyClaim | None:
        cursor = await self._raw.execute(_CLAIMED, (caller, key))
        row = await cursor.fetchone()
        if row is None:
            return None
        fingerprint, payment_id, version, error_reason, error_message = row
        return IdempotencyClaim(
            caller, key, fingerprint, str(payment_id), version, error_reason, error_message
        )

    async def answer_claim(
        self, payment_id: str, *, version: int, error_reason: str = "", error_message: str = ""
    ) -> None:
        await self.answer_claims([ClaimAnswer(payment_id, version, error_reason, error_message)])

    async def answer_claims(self, answers: Sequence[ClaimAnswer]) -> None:
        if not answers:
            return
        await self._raw.execute(_ANSWER_CLAIMS, (_answers_json(answers),))

    async def stalled(self, *, older_than: timedelta, limit: int) -> builtins.list[str]:
        cursor = await self._raw.execute(_STALLED, (older_than, older_than, limit))
        return [str(row[0]) for row in await cursor.fetchall()]

    async def purge_claims(self, *, older_than: timedelta, limit: int) -> int:
        cursor = await self._raw.execute(_PURGE_CLAIMS, (older_than, limit))
        return cursor.rowcount

    async def _one(self, query: str, value: str) -> Payment | None:
        async with self._raw.cursor(row_factory=namedtuple_row) as cursor:
            await cursor.execute(query, (value,))
            return self._seen(await cursor.fetchone())

    def _seen(self, row: Any) -> Payment | None:
        if row is None:
            return None
        payment = _payment(row)
        self._track(payment)
        return payment

    async def add(self, payment: Payment) -> None:
        self._track(payment)
        columns, history, audit = self._new_row(payment)
        async with unique_violation_is_conflict():
            await self._raw.execute(_INSERT, _one_payment(columns, history, audit))
        await self._open_cases(payment)

    async def add_claimed(
        self, claims: Sequence[IdempotencyClaim], payments: Sequence[Payment]
    ) -> builtins.list[IdempotencyClaim | None]:
        """Claims each payment's key (`claims[i]` is `payments[i]`'s; keys distinct) and adds
        the payments whose key was free, in one statement. Answers in order: None for a
        payment added, the earlier claim of its key for one that was not."""
        return await self._claim_and_add(_ADD_CLAIMED, {}, claims, payments)

    async def create(
        self, claims: Sequence[IdempotencyClaim], payments: Sequence[Payment], outbox: str
    ) -> builtins.list[IdempotencyClaim | None]:
        """`add_claimed`, with the outbox rows of the payments it adds taken from `outbox` (an
        `outbox_document` of every payment's events) in the same statement: on a connection in
        autocommit, that statement is the creates' whole transaction."""
        return await self._claim_and_add(_CREATE, {"outbox": outbox}, claims, payments)

    async def _claim_and_add(
        self,
        statement: str,
        extra: dict[str, Any],
        claims: Sequence[IdempotencyClaim],
        payments: Sequence[Payment],
    ) -> builtins.list[IdempotencyClaim | None]:
        keys: builtins.list[dict[str, Any]] = []
        rows: builtins.list[dict[str, Any]] = []
        history: builtins.list[dict[str, Any]] = []
        audit: builtins.list[dict[str, Any]] = []
        for position, (claim, payment) in enumerate(zip(claims, payments, strict=True)):
            columns, changes, steps = self._new_row(payment)
            keys.append(
                {
                    "caller": claim.caller,
                    "key": claim.key,
                    "fingerprint": claim.fingerprint,
                    "payment_id": claim.payment_id,
                    "response_version": claim.response_version,
                }
            )
            rows.append({**_json_columns(columns), "position": position})
            history += changes
            audit += steps
        params = {
            "keys": _json(keys),
            "rows": _json(rows),
            "history": _json(history),
            "audit": _json(audit),
            **extra,
        }
        async with unique_violation_is_conflict():
            cursor = await self._raw.execute(statement, params)
            free = {(caller, key) for caller, key in await cursor.fetchall()}
        priors: builtins.list[IdempotencyClaim | None] = []
        for claim, payment in zip(claims, payments, strict=True):
            if (claim.caller, claim.key) in free:
                self._track(payment)
                await self._open_cases(payment)
                priors.append(None)
            else:
                priors.append(await self._prior_claim(claim))
        return priors

    async def save(self, payment: Payment) -> None:
        """Writes the payment's new changes; nothing when it has none (its events, if any,
        still reach the outbox through the unit of work)."""
        if not payment.has_changes:
            return
        columns, history, audit = self._update(payment)
        cursor = await self._raw.execute(_UPDATE, _one_payment(columns, history, audit))
        row = await cursor.fetchone()
        if row is None or row[0] != 1:
            raise ConcurrentUpdate(f"payment {payment.payment_id} changed concurrently")
        await self._open_cases(payment)

    async def save_many(
        self, payments: Sequence[Payment], answers: Sequence[ClaimAnswer] = ()
    ) -> None:
        """`save` for many payments (distinct ones) and `answer_claims` for `answers`, in one
        statement, which also writes the outbox rows of the payments' events (taken from them
        through the unit of work, which then reports them at commit without writing them
        again). One payment changed takes it too: `save` would leave its answers and its
        outbox rows to two statements more."""
        changed = [payment for payment in payments if payment.has_changes]
        if not changed:
            await self.answer_claims(answers)
            return
        rows: builtins.list[dict[str, Any]] = []
        history: builtins.list[dict[str, Any]] = []
        audit: builtins.list[dict[str, Any]] = []
        for payment in changed:
            columns, changes, steps = self._update(payment)
            rows.append(_json_columns(columns))
            history += changes
            audit += steps
        params = {
            "rows": _json(rows),
            "history": _json(history),
            "audit": _json(audit),
            "answers": _answers_json(answers),
            "outbox": outbox_document(self._take_outgoing(changed)),
        }
        cursor = await self._raw.execute(_UPDATE_MANY, params)
        row = await cursor.fetchone()
        if row is None or row[0] != len(changed):
            raise ConcurrentUpdate("a payment of the batch changed concurrently")
        for payment in changed:
            await self._open_cases(payment)

    async def history(self, payment_id: str) -> list[StatusChange]:
        h = t.payment_status_history
        rows = await self._conn.execute(
            select(h).where(h.c.payment_id == payment_id).order_by(h.c.sequence)
        )
        return [
            StatusChange(
                sequence=r.sequence,
                from_status=PaymentStatus(r.from_status) if r.from_status else None,
                to_status=PaymentStatus(r.to_status),
                reason=r.reason,
                occurred_at=r.occurred_at,
            )
            for r in rows
        ]

    async def list(
        self, *, account_id: str, limit: int, before_seq: int | None, where: PaymentFilter
    ) -> list[tuple[int, Payment]]:
        p = t.payments
        query = select(p).order_by(p.c.seq.desc()).limit(limit)
        if account_id:
            query = query.where(
                or_(p.c.destination_account_id == account_id, p.c.source_account_id == account_id)
            )
        if before_seq is not None:
            query = query.where(p.c.seq < before_seq)
        if where.kind is not None:
            query = query.where(p.c.kind == where.kind.value)
        if where.status is not None:
            query = query.where(p.c.status == where.status.value)
        if where.created_after is not None:
            query = query.where(p.c.created_at >= where.created_after)
        if where.created_before is not None:
            query = query.where(p.c.created_at < where.created_before)
        rows = (await self._conn.execute(query)).all()
        return [(row.seq, _payment(row)) for row in rows]

    async def mark_processed(self, consumer: str, event_id: str) -> bool:
        return await mark_processed(self._raw, consumer, event_id)

    async def steps(self, payment_id: str) -> builtins.list[PaymentStep]:
        cursor = await self._raw.execute(_STEPS, (payment_id,))
        return [
            PaymentStep(step, event_type, occurred_at, dict(data or {}), error)
            for step, event_type, occurred_at, data, error in await cursor.fetchall()
        ]

    @classmethod
    def _update(cls, payment: Payment) -> _Written:
        """`_written`, and what the row must still say for the update to apply: the version
        and step count counted before `_written` takes the new changes and steps."""
        expected_version = payment.version - len(payment.new_changes)
        expected_steps = payment.steps - len(payment.new_steps)
        columns, history, audit = cls._written(payment)
        columns["expected_version"] = expected_version
        columns["expected_steps"] = expected_steps
        return columns, history, audit

    @classmethod
    def _new_row(cls, payment: Payment) -> _Written:
        """A new payment's columns, its transitions and its steps (`_written`)."""
        columns, history, audit = cls._written(payment)
        columns.update(
            kind=payment.kind.value,
            idempotency_key=payment.idempotency_key,
            amount_minor=payment.amount.amount_minor,
            currency=payment.amount.currency,
            source=payment.source_account_id or None,
            destination=payment.destination_account_id or None,
            method=payment.payment_method,
            created_at=payment.created_at,
            parent=payment.parent_payment_id or None,
        )
        return columns, history, audit

    @staticmethod
    def _written(payment: Payment) -> _Written:
        """The payment's mutable columns and, as rows for JSON, the transitions and
        audit-trail steps recorded since it was loaded (taken from it: they are written
        once)."""
        changes, payment.new_changes = payment.new_changes, []
        steps, payment.new_steps = payment.new_steps, []
        payment_id = payment.payment_id
        columns = {
            "payment_id": payment_id,
            "status": payment.status.value,
            "failure_reason": payment.failure_reason,
            "operation_id": payment.gateway_operation_id,
            "version": payment.version,
            "updated_at": payment.updated_at,
            "steps": payment.steps,
            "saga": _saga_data(payment.saga),
        }
        history = [
            {
                "payment_id": payment_id,
                "sequence": c.sequence,
                "from_status": c.from_status.value if c.from_status else None,
                "to_status": c.to_status.value,
                "reason": c.reason,
                "occurred_at": c.occurred_at.isoformat(),
            }
            for c in changes
        ]
        audit = [
            {
                "payment_id": payment_id,
                "step": step.step,
                "event_type": step.event_type,
                "occurred_at": step.occurred_at.isoformat(),
                "data": dict(step.data),
                "error": step.error,
            }
            for step in steps
        ]
        return columns, history, audit

    async def _open_cases(self, payment: Payment) -> None:
        """The review cases recorded since the payment was loaded; after its row's write, which
        locks it."""
        reviews, payment.new_reviews = payment.new_reviews, []
        for opening in reviews:
            await self._raw.execute(
                _OPEN_CASE,
                (
                    new_id(),
                    opening.payment_id,
                    opening.reason_code.value,
                    opening.reason,
                    opening.occurred_at,
                    Jsonb([_evidence_json(opening)]),
                ),
            )

    # -- review cases ---------------------------------------------------------------------

    async def get_case(self, case_id: str, *, for_update: bool = False) -> ReviewCase | None:
        cases = await self._cases(_CASE + (" FOR UPDATE" if for_update else ""), (case_id,))
        return cases[0][1] if cases else None

    async def open_case(self, payment_id: str) -> ReviewCase | None:
        cases = await self._cases(_OPEN_CASE_OF, (payment_id,))
        return cases[0][1] if cases else None

    async def case_with_key(self, payment_id: str, key: str) -> ReviewCase | None:
        cases = await self._cases(_CASE_WITH_KEY, (payment_id, Jsonb([{"key": key}])))
        return cases[0][1] if cases else None

    async def list_cases(
        self, *, status: ReviewStatus, limit: int, after_seq: int | None
    ) -> builtins.list[tuple[int, ReviewCase]]:
        return await self._cases(_LIST_CASES, (status.value, after_seq or 0, limit))

    async def save_case(self, case: ReviewCase) -> None:
        decision = case.decision
        if decision is None:
            claimed = case.claimed.value if case.claimed else ""
            cursor = await self._raw.execute(_CLAIM_CASE, (claimed, case.case_id))
            if cursor.rowcount != 1:
                raise ReviewAlreadyResolved(f"review case {case.case_id} is already resolved")
            return
        cursor = await self._raw.execute(
            _RESOLVE_CASE,
            (
                case.status.value,
                decision.resolution.value,
                decision.note,
                decision.resolved_by,
                decision.resolved_at,
                case.case_id,
                decision.resolution.value,
            ),
        )
        if cursor.rowcount != 1:
            raise ReviewAlreadyResolved(f"review case {case.case_id} is already resolved")

    async def alarm_overdue(
        self, *, opened_before: datetime, alarmed_before: datetime, now: datetime, limit: int
    ) -> builtins.list[ReviewCase]:
        rows = await self._cases(_ALARM_CASES, (now, opened_before, alarmed_before, limit))
        return [case for _, case in sorted(rows, key=lambda row: row[0])]

    async def _cases(
        self, query: str, params: tuple[Any, ...]
    ) -> builtins.list[tuple[int, ReviewCase]]:
        async with self._raw.cursor(row_factory=namedtuple_row) as cursor:
            await cursor.execute(query, params)
            rows: builtins.list[Any] = await cursor.fetchall()
            return [(row.seq, _case(row)) for row in rows]

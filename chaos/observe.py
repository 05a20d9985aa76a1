"""The end state of a chaos run, read from outside and inside.

Outside: GetPayment for every payment a client was told about, the simulators' operations.
Inside (operator reads, as `paysuite ledger verify`, `outbox status`, `events pending` and
`events dlq list` do): the payment, wallet and review tables, the ledger, the outboxes, the
consumer groups and the dead-letter streams.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import psycopg
from redis.asyncio import Redis

from chaos.api import status_name
from chaos.history import (
    AccountView,
    DeadLetter,
    Observed,
    PaymentSnapshot,
    PaymentView,
    ProviderOp,
    ReviewCase,
    TransactionView,
)
from common import db
from common.config import Settings
from common.events import suite_stream_keys
from devstack import pipeline
from payment_service.bootstrap import DATABASE as PAYMENT_DB
from payment_service.domain.status import TERMINAL, PaymentStatus
from paysuite.payment.v1 import payment_pb2, payment_pb2_grpc
from wallet_service.adapters.audit import verify_ledger
from wallet_service.bootstrap import DATABASE as WALLET_DB

CONNECT_TIMEOUT_S = 5
SETTLED = tuple(s.value for s in (*TERMINAL, PaymentStatus.REQUIRES_MANUAL_REVIEW))
_OPEN_PAYMENTS = "SELECT count(*) FROM payments WHERE NOT (status = ANY(%s))"
_PAYMENTS = (
    "SELECT payment_id::text, kind, status, amount_minor, currency, idempotency_key,"
    " failure_reason, coalesce(parent_payment_id::text, '') FROM payments"
)
_TRAILS = (
    "SELECT payment_id::text, to_status FROM payment_status_history ORDER BY payment_id, sequence"
)
# The audit steps of every payment not settled, for a stuck payment's violation to say why.
_OPEN_STEPS = (
    "SELECT s.payment_id::text, s.event_type, s.occurred_at, s.error FROM payment_steps s"
    " JOIN payments p ON p.payment_id = s.payment_id WHERE NOT (p.status = ANY(%s))"
    " ORDER BY s.payment_id, s.step"
)
# The payments not settled, each with its last audit steps (a slow run's evidence).
LAST_STEPS = 3
OPEN_LISTED = 50
_OPEN_NOW = (
    "SELECT payment_id::text, kind, status, idempotency_key FROM payments"
    " WHERE NOT (status = ANY(%s))"
    " ORDER BY created_at LIMIT %s"
)
_LAST_STEPS = (
    "SELECT payment_id::text, event_type, occurred_at, error FROM ("
    " SELECT s.*, row_number() OVER (PARTITION BY s.payment_id ORDER BY s.step DESC) AS n"
    " FROM payment_steps s WHERE s.payment_id = ANY(%s::uuid[])) t"
    " WHERE n <= %s ORDER BY payment_id, step"
)
# The payments the resume sweep (the safety net behind the saga's own retries) moved on.
ALL_STEPS = 30
_RESUMED = (
    "SELECT p.payment_id::text, p.kind, p.status, p.idempotency_key FROM payments p"
    " WHERE EXISTS (SELECT 1 FROM payment_steps s WHERE s.payment_id = p.payment_id"
    " AND s.event_type = 'saga.resumed') ORDER BY p.created_at LIMIT %s"
)
_REVIEWS = "SELECT payment_id::text, reason_code, status FROM review_cases"
_ACCOUNTS = (
    "SELECT a.account_id::text, a.currency, a.kind, a.total_minor, a.held_minor,"
    " coalesce(sum(e.amount_minor), 0)::bigint, coalesce(min(e.balance_after_minor), 0)::bigint"
    " FROM accounts a LEFT JOIN ledger_entries e ON e.account_id = a.account_id"
    " GROUP BY a.account_id"
)
_TRANSACTIONS = (
    "SELECT t.transaction_id::text, t.operation_ref, t.kind, e.currency,"
    " sum(e.amount_minor)::bigint FROM ledger_transactions t"
    " JOIN ledger_entries e ON e.transaction_id = t.transaction_id"
    " GROUP BY t.transaction_id, e.currency"
)


def _dsn(settings: Settings, database: Any) -> str:
    return db.libpq_dsn(database.url(settings))


async def _rows(dsn: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S) as c:
        return list(await (await c.execute(query, params)).fetchall())


async def open_payments(settings: Settings) -> int:
    rows = await _rows(_dsn(settings, PAYMENT_DB), _OPEN_PAYMENTS, (list(SETTLED),))
    return int(rows[0][0])


def _step_line(occurred_at: Any, event_type: str, error: str | None) -> str:
    at = occurred_at.strftime("%H:%M:%S.%f")[:-3]
    return f"{at} {event_type}" + (f" ({error[:60]})" if error else "")


async def open_now(settings: Settings) -> list[PaymentSnapshot]:
    """The payments open now (at most OPEN_LISTED, oldest first), each with its last steps."""
    dsn = _dsn(settings, PAYMENT_DB)
    opened = await _rows(dsn, _OPEN_NOW, (list(SETTLED), OPEN_LISTED))
    return await _snapshots(dsn, opened, LAST_STEPS)


async def resumed(settings: Settings) -> list[PaymentSnapshot]:
    """The payments the resume sweep moved on (at most OPEN_LISTED), with all their steps."""
    dsn = _dsn(settings, PAYMENT_DB)
    return await _snapshots(dsn, await _rows(dsn, _RESUMED, (OPEN_LISTED,)), ALL_STEPS)


async def _snapshots(dsn: str, payments: list[tuple[Any, ...]], last: int) -> list[PaymentSnapshot]:
    steps: dict[str, list[str]] = defaultdict(list)
    ids = [row[0] for row in payments]
    for payment_id, event_type, occurred_at, error in await _rows(dsn, _LAST_STEPS, (ids, last)):
        steps[payment_id].append(_step_line(occurred_at, event_type, error))
    return [
        PaymentSnapshot(pid, kind, status, key, steps[pid]) for pid, kind, status, key in payments
    ]


@dataclass(frozen=True, slots=True)
class Backlog:
    """The pipeline's load at one instant (the chart's lower panel)."""

    at: float
    open_payments: int | None
    outbox: int | None
    pending: int | None


async def backlog(settings: Settings, at: float) -> Backlog:
    async def safely(work: Any) -> int | None:
        try:
            return int(await asyncio.wait_for(work, CONNECT_TIMEOUT_S))
        except Exception:  # the point of the run: servers are down at times
            return None

    return Backlog(
        at,
        await safely(open_payments(settings)),
        await safely(_outbox_total(settings)),
        await safely(_pending_total(settings)),
    )


async def _outbox_total(settings: Settings) -> int:
    statuses = await pipeline.outbox_status(settings)
    if any(s.error for s in statuses):
        raise ConnectionError("an outbox is unreachable")
    return sum(s.unpublished or 0 for s in statuses)


async def _pending_total(settings: Settings) -> int:
    return sum((await _pending(settings)).values())


async def _pending(settings: Settings) -> dict[str, int]:
    redis = Redis.from_url(settings.require_redis_url(), socket_timeout=CONNECT_TIMEOUT_S)
    try:
        statuses = await pipeline.pending_status(redis, suite_stream_keys(settings.stream_prefix))
    finally:
        await redis.aclose()
    return {f"{s.stream}/{g.group}": g.pending for s in statuses for g in s.groups}


async def _dead_letters(settings: Settings) -> list[DeadLetter]:
    redis = Redis.from_url(settings.require_redis_url(), socket_timeout=CONNECT_TIMEOUT_S)
    try:
        letters = []
        for stream in suite_stream_keys(settings.stream_prefix):
            for letter in await pipeline.dead_letters(redis, stream, limit=1000):
                letters.append(
                    DeadLetter(stream, letter.field("event_type"), letter.field("error"))
                )
        return letters
    finally:
        await redis.aclose()


async def _ledger_findings(settings: Settings) -> list[str]:
    engine = db.create_engine(WALLET_DB.url(settings), pool_size=2)
    try:
        report = await verify_ledger(engine)
    finally:
        await engine.dispose()
    return [f"{f.check} {f.subject}: {f.detail}" for f in report.findings]


async def _provider_ops(http: aiohttp.ClientSession, urls: Iterable[str]) -> list[ProviderOp]:
    found = []
    for url in urls:
        async with http.get(f"{url}/_sim/operations") as response:
            response.raise_for_status()
            body = await response.json()
        for op in body["operations"]:
            found.append(
                ProviderOp(
                    op["object"], op["status"], op["amount_minor"], op["currency"], op["reference"]
                )
            )
    return found


async def _payments(settings: Settings, observed: Observed) -> None:
    dsn = _dsn(settings, PAYMENT_DB)
    for row in await _rows(dsn, _PAYMENTS):
        payment = PaymentView(*row)
        observed.payments[payment.payment_id] = payment
    trails: dict[str, list[str]] = defaultdict(list)
    for payment_id, status in await _rows(dsn, _TRAILS):
        trails[payment_id].append(status)
    observed.trails = dict(trails)
    steps: dict[str, list[str]] = defaultdict(list)
    for payment_id, event_type, occurred_at, error in await _rows(
        dsn, _OPEN_STEPS, (list(SETTLED),)
    ):
        steps[payment_id].append(_step_line(occurred_at, event_type, error))
    observed.open_steps = dict(steps)
    observed.review_cases = [ReviewCase(*row) for row in await _rows(dsn, _REVIEWS)]


async def _wallet(settings: Settings, observed: Observed) -> None:
    dsn = _dsn(settings, WALLET_DB)
    for account_id, currency, kind, total, held, entries, lowest in await _rows(dsn, _ACCOUNTS):
        # System accounts keep no projected balance: theirs is the sum of their entries.
        projected = total if kind == "customer" else entries
        observed.accounts[account_id] = AccountView(
            account_id, currency.strip(), kind, projected, held, entries, lowest
        )
    sums: dict[tuple[str, str, str], dict[str, int]] = defaultdict(dict)
    for transaction_id, ref, kind, currency, total in await _rows(dsn, _TRANSACTIONS):
        sums[(transaction_id, ref, kind)][currency.strip()] = int(total)
    observed.transactions = [TransactionView(*key, total) for key, total in sums.items()]


async def _public_reads(
    payments: payment_pb2_grpc.PaymentServiceAsyncStub,
    payment_ids: Iterable[str],
    observed: Observed,
) -> None:
    slots = asyncio.Semaphore(16)

    async def read(payment_id: str) -> None:
        async with slots:
            try:
                payment = await payments.GetPayment(
                    payment_pb2.GetPaymentRequest(payment_id=payment_id), timeout=10
                )
            except grpc.aio.AioRpcError as exc:
                observed.unreadable[payment_id] = exc.code().name
                return
        stored = observed.payments.get(payment_id)
        status = status_name(payment.status)
        if stored is not None and stored.status != status:
            observed.disagreeing[payment_id] = f"GetPayment {status}, stored {stored.status}"

    await asyncio.gather(*(read(payment_id) for payment_id in sorted(set(payment_ids))))


async def observe(
    settings: Settings,
    *,
    payments: payment_pb2_grpc.PaymentServiceAsyncStub,
    http: aiohttp.ClientSession,
    simulators: Iterable[str],
    acknowledged: Iterable[str],
    all_terminal_at: float | None,
) -> Observed:
    observed = Observed(all_terminal_at=all_terminal_at)
    await _payments(settings, observed)
    await _wallet(settings, observed)
    await _public_reads(payments, acknowledged, observed)
    observed.provider_ops = await _provider_ops(http, simulators)
    observed.ledger_findings = await _ledger_findings(settings)
    observed.dead_letters = await _dead_letters(settings)
    observed.outbox_backlog = {
        s.database: (s.unpublished or 0) for s in await pipeline.outbox_status(settings)
    }
    observed.pending_entries = await _pending(settings)
    return observed


async def wait_until_settled(
    settings: Settings, *, clock: Any, deadline: float, drain_s: float = 30.0
) -> float | None:
    """Polls until no payment is open; returns when that was first seen (None: never). Then
    gives the outboxes and consumer groups up to `drain_s` more to empty."""
    settled_at = None
    while clock() < deadline:
        try:
            if await open_payments(settings) == 0:
                settled_at = clock()
                break
        except (psycopg.Error, OSError):
            pass
        await asyncio.sleep(1.0)
    until = time.monotonic() + drain_s
    while time.monotonic() < until:
        try:
            if await _outbox_total(settings) == 0 and await _pending_total(settings) == 0:
                break
        except Exception:  # noqa: S110 - a server still restarting: look again
            pass
        await asyncio.sleep(1.0)
    return settled_at

"""Seed 003's payment metrics, derived from the status changes a unit of work commits.

Counted after the commit (PaymentUnitOfWork._committed), so a change that rolls back is never
counted and a replayed request, which commits no change, is not counted twice. Every process
that moves payments counts the changes it commits; Prometheus sums the replicas.

Labels: `kind` is fixed by the domain; `currency` by the accepted ISO list; `method` and
`reason` come from callers and providers, so only the first few distinct values are kept
(common.metrics.BoundedLabel). Idempotency hits and conflicts are not counted here: they
commit nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Histogram

from common.metrics import BoundedLabel
from payment_service.domain.events import PaymentStatusChanged
from payment_service.domain.model import Payment
from payment_service.domain.status import TERMINAL

ATTEMPTS = Counter(
    "payment_attempts_total", "Payments created, by kind and payment method.", ["kind", "method"]
)
SUCCESS = Counter(
    "payment_success_total", "Payments completed, by kind and payment method.", ["kind", "method"]
)
FAILURES = Counter(
    "payment_failures_total", "Payments failed, by kind and failure reason.", ["kind", "reason"]
)
AMOUNT = Counter(
    "payment_amount_total",
    "Amount of completed payments, in major units of the currency.",
    ["kind", "currency"],
)
LATENCY = Histogram(
    "payment_latency_seconds",
    "From creation to a terminal status (completed, failed, refunded, cancelled).",
    ["kind", "status"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400),
)
_method = BoundedLabel(limit=20)
_reason = BoundedLabel(limit=30)


def record_committed(events: Sequence[Any], aggregates: Sequence[Any]) -> None:
    for event in events:
        if isinstance(event, PaymentStatusChanged):
            _record(event, aggregates)


def _record(event: PaymentStatusChanged, aggregates: Sequence[Any]) -> None:
    if not event.from_status:
        ATTEMPTS.labels(event.kind, _method(event.payment_method or "unspecified")).inc()
    if event.to_status not in TERMINAL:
        return
    created = _created_at(event.payment_id, aggregates)
    if created is not None:
        elapsed = (datetime.now(UTC) - created).total_seconds()
        LATENCY.labels(event.kind, event.to_status).observe(max(elapsed, 0.0))
    if event.to_status == "completed":
        SUCCESS.labels(event.kind, _method(event.payment_method or "unspecified")).inc()
        amount = event.amount
        AMOUNT.labels(event.kind, amount.currency).inc(amount.amount_minor / 10**amount.exponent)
    elif event.to_status == "failed":
        FAILURES.labels(event.kind, _reason(event.failure_reason or "unspecified")).inc()


def _created_at(payment_id: str, aggregates: Sequence[Any]) -> datetime | None:
    for aggregate in aggregates:
        if isinstance(aggregate, Payment) and aggregate.payment_id == payment_id:
            return aggregate.created_at
    return None

"""Seed 003's payment metrics from committed status changes (no database needed)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

from common.money import Money
from payment_service.adapters.metrics import record_committed
from payment_service.domain.events import PaymentStatusChanged
from payment_service.domain.model import Payment
from payment_service.domain.status import PaymentKind, PaymentStatus

METHOD = "pm_metrics_test"


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def change(payment_id: str, before: str, after: str, reason: str = "") -> PaymentStatusChanged:
    return PaymentStatusChanged(
        payment_id=payment_id,
        kind="deposit",
        from_status=before,
        to_status=after,
        amount=Money(1250, "JPY"),
        source_account_id="",
        destination_account_id=str(uuid.uuid4()),
        failure_reason=reason,
        version=1,
        payment_method=METHOD,
    )


def payment(payment_id: str, created_at: datetime) -> Payment:
    return Payment(
        payment_id=payment_id,
        kind=PaymentKind.DEPOSIT,
        status=PaymentStatus.COMPLETED,
        amount=Money(1250, "JPY"),
        idempotency_key="k",
        created_at=created_at,
    )


def test_creation_completion_and_failure_are_counted_with_amount_and_latency() -> None:
    ok, declined = str(uuid.uuid4()), str(uuid.uuid4())
    deposit = {"kind": "deposit"}
    names = [
        ("payment_attempts_total", {**deposit, "method": METHOD}),
        ("payment_success_total", {**deposit, "method": METHOD}),
        ("payment_failures_total", {**deposit, "reason": "card_declined"}),
        ("payment_amount_total", {**deposit, "currency": "JPY"}),
        ("payment_latency_seconds_count", {**deposit, "status": "completed"}),
        ("payment_latency_seconds_sum", {**deposit, "status": "completed"}),
    ]
    before = [value(name, **labels) for name, labels in names]

    record_committed(
        [change(ok, "", "initiated"), change(declined, "", "initiated")],
        [],
    )
    record_committed(
        [
            change(ok, "pending", "completed"),
            change(declined, "initiated", "failed", "card_declined"),
        ],
        [payment(ok, datetime.now(UTC) - timedelta(seconds=2))],
    )

    deltas = [value(name, **labels) - b for (name, labels), b in zip(names, before, strict=True)]
    attempts, success, failures, amount, latencies, latency_sum = deltas
    assert (attempts, success, failures, latencies) == (2, 1, 1, 1)
    assert amount == 1250  # JPY has no minor units
    assert 2 <= latency_sum < 10


def test_free_text_labels_are_bounded() -> None:
    for i in range(100):
        record_committed([change(str(uuid.uuid4()), "initiated", "failed", f"reason {i}!")], [])
    reasons = {
        sample.labels["reason"]
        for metric in REGISTRY.collect()
        if metric.name == "payment_failures"
        for sample in metric.samples
    }
    assert "other" in reasons
    assert len(reasons) <= 31

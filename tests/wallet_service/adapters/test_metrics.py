"""Wallet operation results: `ok`, a refusal's reason, or `error`, never free text."""

from __future__ import annotations

import time

from prometheus_client import REGISTRY

from common.errors import InsufficientFunds
from wallet_service.adapters import metrics
from wallet_service.domain.errors import AccountFrozen


def count(kind: str, result: str) -> float:
    labels = {"kind": kind, "result": result}
    return REGISTRY.get_sample_value("wallet_operations_total", labels) or 0.0


def test_results_are_ok_the_reason_or_error() -> None:
    assert metrics.result_of(None) == "ok"
    assert metrics.result_of(AccountFrozen("acc")) == "account_frozen"
    assert metrics.result_of(RuntimeError("boom")) == "error"


def test_observe_counts_by_kind_and_result_and_times_the_operation() -> None:
    before = count("debit", "insufficient_funds"), count("debit", "ok")
    timed = REGISTRY.get_sample_value("wallet_operation_seconds_count", {"kind": "debit"}) or 0.0

    metrics.observe("debit", InsufficientFunds("not enough"), time.perf_counter())
    metrics.observe("debit", None, time.perf_counter())

    assert (count("debit", "insufficient_funds"), count("debit", "ok")) == (
        before[0] + 1,
        before[1] + 1,
    )
    after = REGISTRY.get_sample_value("wallet_operation_seconds_count", {"kind": "debit"})
    assert after == timed + 2

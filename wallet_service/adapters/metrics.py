"""The wallet's operation metrics (seed 003's `wallet_operations_total` and its latency).

`kind` is the operation (credit, debit, transfer, place_hold, capture_hold, release_hold,
freeze, unfreeze, close); `result` is `ok` or the refusing error's reason in lower case
(`insufficient_funds`, `account_frozen`, ...), both fixed by our code. Balances per account
are not exported: one series per account is exactly the cardinality Prometheus cannot take.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram
from prometheus_client.metrics import Counter as CounterType
from prometheus_client.metrics import Histogram as HistogramType

from common.errors import DomainError
from common.metrics import CALL_BUCKETS, BoundedLabel, cached

OPERATIONS = Counter(
    "wallet_operations_total",
    "Wallet mutations by kind and result (a replay of a recorded operation counts as ok).",
    ["kind", "result"],
)
OPERATION_SECONDS = Histogram(
    "wallet_operation_seconds",
    "Time a wallet mutation took, waiting for its group commit included.",
    ["kind"],
    buckets=CALL_BUCKETS,
)
_reason = BoundedLabel(limit=40)


def _bind_count(key: tuple[str, str]) -> CounterType:
    return OPERATIONS.labels(*key)


def _bind_timer(kind: str) -> HistogramType:
    return OPERATION_SECONDS.labels(kind)


_count = cached(_bind_count)
_timer = cached(_bind_timer)


def result_of(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    if isinstance(exc, DomainError):
        return _reason(exc.reason.lower())
    return "error"


def observe(kind: str, exc: BaseException | None, started: float) -> None:
    _timer(kind).observe(time.perf_counter() - started)
    _count((kind, result_of(exc))).inc()

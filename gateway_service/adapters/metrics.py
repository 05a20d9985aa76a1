"""The gateway's own metrics: provider calls, retries and circuit-breaker states.

Every label is a configured provider name, an instruction kind or an outcome from the fixed
list below: bounded by configuration and code, never by what a provider sends.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import Counter as CounterType
from prometheus_client.metrics import Histogram as HistogramType

from common.metrics import CALL_BUCKETS
from gateway_service.domain.breaker import BreakerState, Transition

PROVIDER_CALL_SECONDS = Histogram(
    "gateway_provider_call_seconds",
    "Time one attempt at a provider call took (each retry is an attempt).",
    ["provider", "operation"],
    buckets=CALL_BUCKETS,
)
PROVIDER_CALLS = Counter(
    "gateway_provider_calls_total",
    "Attempts at provider calls by outcome: ok, rejected, not_processed, unavailable, timeout,"
    " or circuit_open (refused by the breaker, never sent).",
    ["provider", "operation", "outcome"],
)
PROVIDER_RETRIES = Counter(
    "gateway_provider_retries_total",
    "Attempts beyond the first at a provider call (same idempotency key).",
    ["provider", "operation"],
)
BREAKER_STATE = Gauge(
    "gateway_circuit_breaker_state",
    "Each provider's circuit breaker as of its last transition: 0 closed, 1 half-open,"
    " 2 open. An open breaker turns half-open at the first call after its reset timeout.",
    ["provider"],
)
BREAKER_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}
OUTCOMES = ("ok", "rejected", "not_processed", "unavailable", "timeout", "circuit_open")
OPERATIONS = ("charge", "payout", "refund", "status")


class ProviderMetrics:
    """One provider's label children, bound up front: the call path only looks them up.
    The service layer's `CallMetrics` port: GuardedProvider reports, this counts."""

    def __init__(self, provider: str) -> None:
        self.seconds: dict[str, HistogramType] = {
            op: PROVIDER_CALL_SECONDS.labels(provider, op) for op in OPERATIONS
        }
        self.calls: dict[tuple[str, str], CounterType] = {
            (op, outcome): PROVIDER_CALLS.labels(provider, op, outcome)
            for op in OPERATIONS
            for outcome in OUTCOMES
        }
        self.retries: dict[str, CounterType] = {
            op: PROVIDER_RETRIES.labels(provider, op) for op in OPERATIONS
        }
        BREAKER_STATE.labels(provider).set(BREAKER_VALUES[BreakerState.CLOSED])

    def attempted(self, operation: str, outcome: str, seconds: float) -> None:
        self.seconds[operation].observe(seconds)
        self.calls[operation, outcome].inc()

    def refused(self, operation: str) -> None:
        self.calls[operation, "circuit_open"].inc()

    def retried(self, operation: str) -> None:
        self.retries[operation].inc()


def breaker_moved(transition: Transition) -> None:
    BREAKER_STATE.labels(transition.name).set(BREAKER_VALUES[transition.to_state])

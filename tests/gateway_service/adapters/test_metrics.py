"""Provider call, retry and circuit-breaker metrics, through GuardedProvider and its fakes."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client import REGISTRY

from gateway_service.adapters.metrics import ProviderMetrics, breaker_moved
from gateway_service.domain.breaker import BreakerOptions, CircuitBreaker
from gateway_service.domain.provider import (
    CircuitOpen,
    ProviderRejected,
    ProviderUnavailable,
)
from gateway_service.service_layer.providers import GuardedProvider, RetryPolicy
from tests.gateway_service.conftest import FakeProvider, charge_instruction


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def provider_under_test(**options: float) -> tuple[FakeProvider, GuardedProvider]:
    # A name of its own: the registry is the process's, shared with every other test.
    fake = FakeProvider(f"metrics-{uuid.uuid4().hex[:8]}")
    guarded = GuardedProvider(
        fake,
        CircuitBreaker(fake.name, BreakerOptions(**options), on_transition=breaker_moved),
        timeout_s=1.0,
        metrics=ProviderMetrics(fake.name),
        retry=RetryPolicy(attempts=3, initial_backoff_s=0.001, max_backoff_s=0.002),
    )
    return fake, guarded


async def test_each_attempt_is_timed_and_counted_by_outcome_and_retries_are_counted() -> None:
    fake, guarded = provider_under_test()
    fake.answers = [ProviderUnavailable("502")]

    await guarded.submit(charge_instruction())
    fake.answers = [ProviderRejected("card_declined", "declined")]
    with pytest.raises(ProviderRejected):
        await guarded.submit(charge_instruction())

    labels = {"provider": fake.name, "operation": "charge"}
    assert value("gateway_provider_calls_total", **labels, outcome="unavailable") == 1
    assert value("gateway_provider_calls_total", **labels, outcome="ok") == 1
    assert value("gateway_provider_calls_total", **labels, outcome="rejected") == 1
    assert value("gateway_provider_retries_total", **labels) == 1
    assert value("gateway_provider_call_seconds_count", **labels) == 3


async def test_the_breaker_state_gauge_follows_its_transitions() -> None:
    fake, guarded = provider_under_test(minimum_calls=2, reset_timeout_s=60)
    state = {"provider": fake.name}
    assert value("gateway_circuit_breaker_state", **state) == 0

    fake.answers = [ProviderUnavailable("502")] * 2
    with pytest.raises(ProviderUnavailable):
        await guarded.submit(charge_instruction())
    assert value("gateway_circuit_breaker_state", **state) == 2
    with pytest.raises(CircuitOpen):
        await guarded.submit(charge_instruction())
    labels = {"provider": fake.name, "operation": "charge"}
    # The first call's third attempt was refused too, once the second failure tripped it.
    assert value("gateway_provider_calls_total", **labels, outcome="circuit_open") == 2

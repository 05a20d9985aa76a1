"""A guarded provider's breaker hears of every call it permitted: an outcome, or for a call
cancelled mid-flight (its caller gone), the permit given back."""

from __future__ import annotations

import asyncio

import pytest

from gateway_service.domain.breaker import BreakerState
from gateway_service.domain.provider import (
    Instruction,
    ProviderUnavailable,
)
from tests.gateway_service.conftest import FakeProvider, charge_instruction, guarded

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_cancelled_trial_call_leaves_the_breaker_able_to_close() -> None:
    fake = FakeProvider("cancelled-trial")
    provider = guarded(
        fake, minimum_calls=2, reset_timeout_s=0.01, half_open_calls=1, failure_rate_threshold=0.5
    )
    fake.answers = [ProviderUnavailable("down")] * 2  # one call, tried twice: it trips
    with pytest.raises(ProviderUnavailable):
        await provider.submit(charge_instruction())
    assert provider.breaker.snapshot().state is BreakerState.OPEN
    fake.answers = []
    await asyncio.sleep(0.02)

    # The one trial's caller goes away while the provider holds its request.
    held = asyncio.Event()

    async def hold(_: Instruction) -> None:
        held.set()
        await asyncio.Event().wait()

    fake.during_call = hold
    trial = asyncio.create_task(provider.submit(charge_instruction()))
    await held.wait()
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial

    fake.during_call = None
    await provider.submit(charge_instruction())  # a new trial: it succeeds and closes the breaker
    assert provider.breaker.snapshot().state is BreakerState.CLOSED

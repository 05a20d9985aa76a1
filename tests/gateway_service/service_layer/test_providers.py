"""A guarded provider's breaker hears of every call it permitted: an outcome, or for a call
cancelled mid-flight (its caller gone), the permit given back."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from common.money import Money
from gateway_service.domain.breaker import BreakerState
from gateway_service.domain.provider import (
    Instruction,
    InstructionKind,
    ProviderUnavailable,
)
from tests.gateway_service.conftest import FakeProvider, guarded

pytestmark = pytest.mark.asyncio(loop_scope="session")


def charge() -> Instruction:
    return Instruction(
        kind=InstructionKind.CHARGE,
        idempotency_key=f"pay-{uuid.uuid4()}:charge",
        amount=Money(1250, "EUR"),
        instrument="pm_card_visa",
        reference=str(uuid.uuid4()),
    )


async def test_a_cancelled_trial_call_leaves_the_breaker_able_to_close() -> None:
    fake = FakeProvider("cancelled-trial")
    provider = guarded(
        fake, minimum_calls=2, reset_timeout_s=0.01, half_open_calls=1, failure_rate_threshold=0.5
    )
    fake.answers = [ProviderUnavailable("down")] * 2  # one call, tried twice: it trips
    with pytest.raises(ProviderUnavailable):
        await provider.submit(charge())
    assert provider.breaker.snapshot().state is BreakerState.OPEN
    fake.answers = []
    await asyncio.sleep(0.02)

    # The one trial's caller goes away while the provider holds its request.
    held = asyncio.Event()

    async def hold(_: Instruction) -> None:
        held.set()
        await asyncio.Event().wait()

    fake.during_call = hold
    trial = asyncio.create_task(provider.submit(charge()))
    await held.wait()
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial

    fake.during_call = None
    await provider.submit(charge())  # a new trial: it succeeds and closes the breaker
    assert provider.breaker.snapshot().state is BreakerState.CLOSED

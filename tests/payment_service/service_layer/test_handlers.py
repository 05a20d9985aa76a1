"""The reactions to the gateway's facts on fakes: a charge's outcome credits once however
often it is delivered, waits out a wallet outage, and never moves a settled payment back."""

from __future__ import annotations

import pytest

from common.errors import DependencyUnavailable
from common.money import Money
from payment_service.domain.events import ReviewRequested
from payment_service.domain.saga import ProviderAnswer
from payment_service.domain.status import PaymentStatus
from tests.payment_service.world import ACCOUNT, World

S = PaymentStatus


async def test_charge_succeeded_credits_once_even_when_delivered_twice() -> None:
    world = World()
    payment_id = await world.deposit()
    for _ in range(2):
        await world.handlers.charge_succeeded(
            event_id="e1", payment_id=payment_id, operation_id="op"
        )
    assert world.wallet.credits == {f"{payment_id}:credit": (ACCOUNT, Money(1000, "USD"))}
    history = await world.queries.history(payment_id)
    assert [c.to_status for c in history] == [S.INITIATED, S.PENDING, S.COMPLETED]


async def test_charge_succeeded_before_pending_was_recorded_still_completes() -> None:
    world = World()
    world.gateway.unavailable = True
    payment_id = await world.deposit()
    await world.handlers.charge_succeeded(event_id="e1", payment_id=payment_id, operation_id="op")
    assert (await world.queries.get_payment(payment_id)).status is S.COMPLETED


async def test_wallet_outage_is_retried_not_failed() -> None:
    world = World()
    payment_id = await world.deposit()
    world.wallet.unavailable = True
    with pytest.raises(DependencyUnavailable):
        await world.handlers.charge_succeeded(
            event_id="e1", payment_id=payment_id, operation_id="op"
        )
    assert (await world.queries.get_payment(payment_id)).status is S.PENDING


async def test_credit_that_can_never_apply_starts_a_refund() -> None:
    world = World()
    payment_id = await world.deposit()
    world.wallet.accounts.clear()
    await world.handlers.charge_succeeded(event_id="e1", payment_id=payment_id, operation_id="op")
    assert (await world.queries.get_payment(payment_id)).status is S.REFUNDING


async def test_a_late_success_on_a_failed_payment_publishes_a_review_request() -> None:
    world = World()
    world.gateway.answer = ProviderAnswer.DECLINED
    payment_id = await world.deposit()
    await world.handlers.charge_succeeded(event_id="e1", payment_id=payment_id, operation_id="op")
    assert (await world.queries.get_payment(payment_id)).status is S.FAILED
    assert world.wallet.credits == {}  # never credited: an operator decides
    assert isinstance(world.published[-1], ReviewRequested)


async def test_late_failure_never_overwrites_a_completed_payment() -> None:
    world = World()
    payment_id = await world.deposit()
    await world.handlers.charge_succeeded(event_id="e1", payment_id=payment_id, operation_id="op")
    await world.handlers.charge_failed(
        event_id="e2", payment_id=payment_id, operation_id="op", reason="card_declined"
    )
    assert (await world.queries.get_payment(payment_id)).status is S.COMPLETED


async def test_events_for_unknown_payments_are_ignored() -> None:
    world = World()
    await world.handlers.charge_succeeded(
        event_id="e1", payment_id="8c0a0f7e-1111-4111-8111-111111111111", operation_id="op"
    )
    assert world.wallet.credits == {}

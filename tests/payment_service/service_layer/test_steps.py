"""The saga step on fakes: it commits what the payment decided, commits nothing when the
decision is to change nothing, answers a missing payment as told, and runs again on a lost
race unless its caller retries a larger whole."""

from __future__ import annotations

import pytest

from common.errors import ConcurrentUpdate, NotFound
from payment_service.domain.model import Payment
from payment_service.domain.status import PaymentStatus
from payment_service.service_layer.steps import Unchanged, step
from tests.payment_service.fakes import FakeUnitOfWork
from tests.payment_service.world import World

UNKNOWN = "8c0a0f7e-1111-4111-8111-111111111111"


class Counted(World):
    commits: int = 0

    def uow(self) -> FakeUnitOfWork:
        world = self

        class Counting(FakeUnitOfWork):
            async def commit(self) -> None:
                world.commits += 1
                await super().commit()

        return Counting(self.store, self.published)


def cancel(payment: Payment) -> PaymentStatus:
    payment.cancel()
    return payment.status


async def test_a_decision_is_saved_and_committed_once() -> None:
    world = Counted()
    payment_id = await world.create()
    before = world.commits
    assert await step(world.uow, payment_id, cancel) is PaymentStatus.CANCELLED
    assert world.commits == before + 1
    assert world.store.rows[payment_id].status is PaymentStatus.CANCELLED


async def test_an_unchanged_decision_commits_nothing() -> None:
    world = Counted()
    payment_id = await world.create()
    before = world.commits
    assert await step(world.uow, payment_id, lambda p: Unchanged(p.status)) is (
        PaymentStatus.INITIATED
    )
    assert world.commits == before


async def test_a_missing_payment_is_not_found_unless_told_otherwise() -> None:
    world = Counted()
    with pytest.raises(NotFound):
        await step(world.uow, UNKNOWN, cancel)
    assert await step(world.uow, UNKNOWN, cancel, missing=lambda: None) is None
    assert world.commits == 0


async def test_a_lost_race_runs_the_step_again_unless_the_caller_retries_itself() -> None:
    world = Counted()
    payment_id = await world.create()
    calls: list[str] = []

    def lose_once(payment: Payment) -> PaymentStatus:
        calls.append(payment.payment_id)
        if len(calls) == 1:
            raise ConcurrentUpdate("lost a race")
        return cancel(payment)

    assert await step(world.uow, payment_id, lose_once) is PaymentStatus.CANCELLED
    assert len(calls) == 2
    calls.clear()
    with pytest.raises(ConcurrentUpdate):
        await step(world.uow, payment_id, lose_once, retry=False)
    assert len(calls) == 1

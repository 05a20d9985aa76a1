"""The saga step on fakes: it commits what the payment decided, saves nothing when the
decision is to change nothing, answers a missing payment as told, and runs again on a lost
race unless its caller retries a larger whole."""

from __future__ import annotations

import asyncio

import pytest

from common.errors import ConcurrentUpdate, NotFound
from payment_service.domain.model import Payment
from payment_service.domain.status import PaymentStatus
from payment_service.service_layer.steps import Steps, Unchanged, step
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


def decline(payment: Payment) -> PaymentStatus:
    payment.fail("declined")
    return payment.status


async def test_a_decision_is_saved_and_committed_once() -> None:
    world = Counted()
    payment_id = await world.create()
    before = world.commits
    assert await step(world.uow, payment_id, decline) is PaymentStatus.FAILED
    assert world.commits == before + 1
    assert world.store.rows[payment_id].status is PaymentStatus.FAILED


async def test_an_unchanged_decision_saves_nothing_and_ends_with_commit() -> None:
    # COMMIT rather than ROLLBACK: psycopg drops its prepared statements on ROLLBACK.
    world = Counted()
    payment_id = await world.create()
    before, version = world.commits, world.store.rows[payment_id].version
    assert await step(world.uow, payment_id, lambda p: Unchanged(p.status)) is (
        PaymentStatus.INITIATED
    )
    assert world.commits == before + 1
    assert world.store.rows[payment_id].version == version


async def test_a_missing_payment_is_not_found_unless_told_otherwise() -> None:
    world = Counted()
    with pytest.raises(NotFound):
        await step(world.uow, UNKNOWN, decline)
    assert world.commits == 0
    # Told otherwise, it ends with COMMIT of nothing, as an unchanged decision does.
    assert await step(world.uow, UNKNOWN, decline, missing=lambda: None) is None
    assert world.commits == 1


async def test_a_lost_race_runs_the_step_again_unless_the_caller_retries_itself() -> None:
    world = Counted()
    payment_id = await world.create()
    calls: list[str] = []

    def lose_once(payment: Payment) -> PaymentStatus:
        calls.append(payment.payment_id)
        if len(calls) == 1:
            raise ConcurrentUpdate("lost a race")
        return decline(payment)

    assert await step(world.uow, payment_id, lose_once) is PaymentStatus.FAILED
    assert len(calls) == 2
    calls.clear()
    with pytest.raises(ConcurrentUpdate):
        await step(world.uow, payment_id, lose_once, retry=False)
    assert len(calls) == 1


# -- group commit -----------------------------------------------------------------------


async def test_steps_arriving_together_share_one_commit_and_each_gets_its_answer() -> None:
    world = Counted()
    ids = [await world.create(key=f"k{i}") for i in range(5)]
    steps, before = Steps(world.uow), world.commits
    answers = await asyncio.gather(*(steps.step(payment_id, decline) for payment_id in ids))
    assert answers == [PaymentStatus.FAILED] * 5
    assert world.commits == before + 1
    assert {world.store.rows[p].status for p in ids} == {PaymentStatus.FAILED}


async def test_one_steps_error_is_its_own_and_its_neighbours_still_commit() -> None:
    world = Counted()
    ids = [await world.create(key=f"k{i}") for i in range(4)]
    refused = ids[2]

    def decline_but_one(payment: Payment) -> PaymentStatus:
        if payment.payment_id == refused:
            payment.fail("declined")  # changed in memory, then refused: must not be saved
            raise NotFound("payment", payment.payment_id)
        return decline(payment)

    steps = Steps(world.uow)
    answers = await asyncio.gather(
        *(steps.step(payment_id, decline_but_one) for payment_id in ids), return_exceptions=True
    )
    assert isinstance(answers[2], NotFound)
    assert [a for i, a in enumerate(answers) if i != 2] == [PaymentStatus.FAILED] * 3
    assert world.store.rows[refused].status is PaymentStatus.INITIATED
    # A missing payment answers as told, inside the batch too.
    assert await steps.step(UNKNOWN, decline, missing=lambda: None) is None


async def test_two_steps_of_one_payment_in_a_batch_run_one_after_the_other() -> None:
    world = Counted()
    ids = [await world.create(key=f"k{i}") for i in range(3)]
    steps = Steps(world.uow)
    seen: list[tuple[str, PaymentStatus]] = []

    def note(payment: Payment) -> Unchanged[PaymentStatus]:
        seen.append((payment.payment_id, payment.status))
        return Unchanged(payment.status)

    answers = await asyncio.gather(
        steps.step(ids[0], note),
        steps.step(ids[1], decline),
        steps.step(ids[2], note),
        steps.step(ids[1], note),  # the same payment as the second: after it, and sees it
    )
    assert answers[1] is PaymentStatus.FAILED
    assert (ids[1], PaymentStatus.FAILED) in seen


async def test_peeks_arriving_together_share_one_read() -> None:
    world = Counted()
    ids = [await world.create(key=f"k{i}") for i in range(3)]
    steps, before = Steps(world.uow), world.commits
    found = await asyncio.gather(*(steps.peek(p) for p in [*ids, UNKNOWN]))
    assert [p.payment_id if p else None for p in found] == [*ids, None]
    assert world.commits == before + 1


async def test_reactions_in_a_batch_record_their_events_once_and_a_redelivery_changes_nothing() -> (
    None
):
    world = Counted()
    ids = [await world.create(key=f"k{i}") for i in range(3)]
    steps = Steps(world.uow)
    events = [f"8c0a0f7e-0000-4000-8000-00000000000{i}" for i in range(3)]
    declined: list[str] = []

    def decline_noting(payment: Payment) -> None:
        declined.append(payment.payment_id)
        payment.fail("declined")

    await steps.react(ids[0], ("c", events[0]), decline_noting, missing=lambda: None)
    before = world.commits
    # The first event again (a redelivery) beside two new ones: one transaction, two effects.
    await asyncio.gather(
        *(
            steps.react(p, ("c", e), decline_noting, missing=lambda: None)
            for p, e in zip(ids, events, strict=True)
        )
    )
    assert world.commits == before + 1
    assert declined == ids
    assert {world.store.rows[p].status for p in ids} == {PaymentStatus.FAILED}


async def test_two_consumers_reactions_in_a_batch_record_each_and_none_for_a_missing_payment() -> (
    None
):
    world = Counted()
    ids = [await world.create(key=f"k{i}") for i in range(2)]
    steps = Steps(world.uow)
    event = "8c0a0f7e-0000-4000-8000-000000000009"
    declined: list[str] = []

    def decline_noting(payment: Payment) -> None:
        declined.append(payment.payment_id)
        payment.fail("declined")

    before = world.commits
    await asyncio.gather(
        steps.react(ids[0], ("saga", event), decline_noting, missing=lambda: None),
        steps.react(ids[1], ("other", event), decline_noting, missing=lambda: None),
        steps.react(UNKNOWN, ("third", event), decline_noting, missing=lambda: None),
    )
    assert world.commits == before + 1
    assert declined == ids
    assert world.store.processed == {("saga", event), ("other", event)}

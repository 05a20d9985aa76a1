"""The reconciliation sweep: what it fetches, which cases it opens, and its marks."""

from __future__ import annotations

from datetime import timedelta

from recovery_worker.domain.model import SweepStatus
from recovery_worker.domain.reconcile import Step
from recovery_worker.service_layer.reconcile import (
    LAST_RUN,
    LEDGER_MARK,
    PAYMENTS_MARK,
    SETTLE_MARGIN,
    ReconcileSweep,
)
from tests.recovery_worker.fakes import T0
from tests.recovery_worker.reconcile_fakes import (
    FakeFacts,
    FakeJournal,
    FakeMarks,
    FakeOperations,
    FakeReviews,
    facts,
    movement,
    succeeded,
)

EVERY = timedelta(minutes=5)
WINDOW = timedelta(hours=1)


class World:
    def __init__(self, payments: FakeFacts, journal: FakeJournal, ops: FakeOperations) -> None:
        self.payments, self.journal, self.ops = payments, journal, ops
        self.reviews, self.marks = FakeReviews(), FakeMarks()
        self.sweep = ReconcileSweep(
            payments=payments,
            journal=journal,
            operations=ops,
            reviews=self.reviews,
            marks=self.marks,
            every=EVERY,
            window=WINDOW,
        )


async def test_clean_data_opens_no_case_in_one_wallet_call_per_page() -> None:
    deposit, withdrawal = facts(), facts(kind="withdrawal", operation="op-2")
    world = World(
        FakeFacts(deposit, withdrawal),
        FakeJournal(movement(deposit, Step.CREDIT), movement(withdrawal, Step.CAPTURE)),
        FakeOperations(succeeded(deposit), succeeded(withdrawal)),
    )
    report = await world.sweep.run_once(T0)
    assert (report.status, report.found, report.acted) == (SweepStatus.DONE, 0, 0)
    assert world.reviews.cases == {}
    assert world.journal.calls == 1
    assert sorted(world.ops.asked) == ["op-1", "op-2"]
    assert world.payments.lookups == []  # every movement's payment was on the page


async def test_each_mismatch_opens_a_case_once_however_often_it_runs() -> None:
    short, failed = facts(), facts("failed", operation="op-2")
    world = World(
        FakeFacts(short, failed),
        FakeJournal(movement(short, Step.CREDIT, 900), movement(failed, Step.CREDIT)),
        FakeOperations(succeeded(short)),
    )
    first = await world.sweep.run_once(T0)
    # The failed payment's credit is found from both sides: one mismatch, one case.
    assert (first.found, first.acted) == (2, 2)
    assert sorted(world.reviews.cases) == sorted([short.payment_id, failed.payment_id])
    assert all(len(found) == 1 for found in world.reviews.cases.values())
    world.marks.marks.clear()
    await world.sweep.run_once(T0 + EVERY)
    assert all(len(found) == 1 for found in world.reviews.cases.values())


async def test_a_movement_of_an_older_payment_is_looked_up_and_an_orphan_reported() -> None:
    old = facts("failed", created=T0 - timedelta(days=2))
    ghost = facts()
    world = World(
        FakeFacts(old),
        FakeJournal(movement(old, Step.CREDIT), movement(ghost, Step.CREDIT)),
        FakeOperations(),
    )
    report = await world.sweep.run_once(T0)
    assert sorted(world.payments.lookups) == sorted([old.payment_id, ghost.payment_id])
    assert list(world.reviews.cases) == [old.payment_id]
    assert (report.found, report.acted, report.skipped) == (2, 1, 1)
    assert any("belongs to no payment" in note for note in report.notes)


async def test_it_runs_every_few_minutes_and_resumes_from_its_marks() -> None:
    in_flight = facts("pending", created=T0 - timedelta(minutes=30))
    world = World(FakeFacts(in_flight), FakeJournal(), FakeOperations())
    await world.sweep.run_once(T0)
    assert world.payments.since == [T0 - WINDOW]
    # The payment still in flight holds the payments' mark back; the ledger's trails now.
    assert world.marks.marks[PAYMENTS_MARK] == in_flight.created_at
    assert world.marks.marks[LEDGER_MARK] == T0 - SETTLE_MARGIN
    assert world.marks.marks[LAST_RUN] == T0

    not_due = await world.sweep.run_once(T0 + EVERY - timedelta(seconds=1))
    assert not_due.status is SweepStatus.NOT_DUE
    assert len(world.payments.since) == 1

    world.payments.payments.clear()
    await world.sweep.run_once(T0 + EVERY)
    assert world.payments.since[-1] == in_flight.created_at
    assert world.marks.marks[PAYMENTS_MARK] == T0 + EVERY - SETTLE_MARGIN


async def test_an_unavailable_wallet_keeps_the_marks_for_the_next_round() -> None:
    payment = facts()
    world = World(FakeFacts(payment), FakeJournal(), FakeOperations(succeeded(payment)))
    world.journal.down = True
    report = await world.sweep.run_once(T0)
    assert report.status is SweepStatus.UNAVAILABLE
    assert world.marks.marks == {}
    assert world.reviews.cases == {}

"""The sweeps on fakes, with a moved clock: each finds the payments stuck in its status past
its threshold and only those, moves them on through RecoverPayment at the rungs of its ladder
(once per rung, however often it runs), and reports what it did."""

from datetime import timedelta

from common.errors import DependencyUnavailable, NotFound
from recovery_worker.domain.ladder import Ladder
from recovery_worker.domain.model import (
    GroupHealth,
    PaymentStatus,
    PaymentView,
    RecoveryAttempt,
    RecoveryOutcome,
    RecoveryResult,
    StreamHealth,
    SweepStatus,
)
from recovery_worker.service_layer.sweeps import (
    ExpiredHoldsSweep,
    InitiatedSweep,
    LadderSweep,
    PendingSweep,
    PipelineSweep,
    RefundingSweep,
)
from tests.recovery_worker.fakes import (
    T0,
    FakePayments,
    FakePipeline,
    FakeRungMemory,
    FakeWallet,
    payment,
)

MINUTE = timedelta(minutes=1)


def pending_sweep(payments: FakePayments, memory: FakeRungMemory | None = None) -> PendingSweep:
    return PendingSweep(
        payments=payments, memory=memory or FakeRungMemory(), ladder=Ladder.starting_at(MINUTE)
    )


async def test_pending_past_the_threshold_is_recovered_and_a_recent_one_left_alone() -> None:
    payments = FakePayments(
        payment("old", age=2 * MINUTE),
        payment("new", age=timedelta(seconds=30)),
        payment("done", PaymentStatus.REFUNDING, age=2 * MINUTE),
        outcome=RecoveryOutcome.SETTLED,
    )

    report = await pending_sweep(payments).run_once(T0)

    assert payments.recovered == ["old"]
    (attempt,) = payments.attempts.values()
    changed = T0 - 2 * MINUTE
    assert attempt.attempt_id == f"pending:{changed.isoformat()}:0"
    assert (attempt.rung, attempt.next_attempt_at) == (0, changed + 5 * MINUTE)
    assert (report.status, report.found, report.acted, report.skipped) == (
        SweepStatus.DONE,
        1,
        1,
        0,
    )


async def test_an_unknown_outcome_waits_for_the_next_rung() -> None:
    payments, memory = FakePayments(payment("p", age=2 * MINUTE)), FakeRungMemory()
    sweep = pending_sweep(payments, memory)

    first = await sweep.run_once(T0)
    too_soon = await sweep.run_once(T0 + 2 * MINUTE)  # 4 min old: still the first rung
    next_rung = await sweep.run_once(T0 + 3 * MINUTE)  # 5 min old

    assert [a.rung for a in payments.attempts.values()] == [0, 1]
    assert (first.acted, too_soon.acted, too_soon.skipped, next_rung.acted) == (1, 0, 1, 1)


async def test_a_lost_rung_memory_asks_the_same_attempt_again_which_acts_once() -> None:
    payments = FakePayments(payment("p", age=2 * MINUTE))

    await pending_sweep(payments, FakeRungMemory()).run_once(T0)
    await pending_sweep(payments, FakeRungMemory()).run_once(T0)  # Redis lost the rung

    assert payments.recovered == ["p"]


async def test_a_payment_that_moved_starts_the_ladder_again() -> None:
    memory = FakeRungMemory()
    payments = FakePayments(payment("p", age=2 * MINUTE))
    await pending_sweep(payments, memory).run_once(T0)

    # It changed since (a new updated_at) and is stuck again.
    payments.payments = [payment("p", age=MINUTE)]
    await pending_sweep(payments, memory).run_once(T0)

    assert payments.recovered == ["p", "p"]
    assert [a.rung for a in payments.attempts.values()] == [0, 0]


async def test_an_unreachable_service_interrupts_the_round_without_climbing_the_ladder() -> None:
    payments, memory = FakePayments(payment("p", age=2 * MINUTE)), FakeRungMemory()
    payments.error = DependencyUnavailable("gateway service unavailable: UNAVAILABLE")

    report = await pending_sweep(payments, memory).run_once(T0)

    assert report.status is SweepStatus.UNAVAILABLE
    assert memory.rungs == {}
    payments.error = None
    assert (await pending_sweep(payments, memory).run_once(T0)).acted == 1


async def test_a_payment_the_service_refuses_is_noted_and_the_rest_go_on() -> None:
    payments = FakePayments(payment("a", age=2 * MINUTE), payment("b", age=3 * MINUTE))
    payments.error = NotFound("payment", "a")

    memory = FakeRungMemory()
    report = await pending_sweep(payments, memory).run_once(T0)
    again = await pending_sweep(payments, memory).run_once(T0)

    assert (report.status, report.found, report.skipped) == (SweepStatus.DONE, 2, 2)
    assert len(report.notes) == 2
    assert again.notes == ()  # asked again at the next rung, not every round


async def test_a_payment_that_moved_on_meanwhile_is_skipped() -> None:
    payments = FakePayments(payment("p", age=2 * MINUTE), outcome=RecoveryOutcome.NOT_STUCK)

    report = await pending_sweep(payments).run_once(T0)

    assert (report.found, report.acted, report.skipped) == (1, 0, 1)


async def test_a_payment_service_outage_is_reported_unavailable() -> None:
    payments = FakePayments(payment("p", age=2 * MINUTE))
    payments.down = True

    report = await pending_sweep(payments).run_once(T0)

    assert report.status is SweepStatus.UNAVAILABLE
    assert "payment service" in report.notes[0]


async def test_initiated_and_refunding_past_their_thresholds_are_recovered_and_only_those() -> None:
    payments = FakePayments(
        payment("i-old", PaymentStatus.INITIATED, age=2 * MINUTE),
        payment("i-new", PaymentStatus.INITIATED, age=timedelta(seconds=10)),
        payment("r-old", PaymentStatus.REFUNDING, age=timedelta(minutes=31)),
        payment("r-new", PaymentStatus.REFUNDING, age=timedelta(minutes=29)),
        payment("p-old", PaymentStatus.PENDING, age=timedelta(hours=2)),
    )
    sweeps: list[LadderSweep] = [
        InitiatedSweep(
            payments=payments, memory=FakeRungMemory(), ladder=Ladder.starting_at(MINUTE)
        ),
        RefundingSweep(
            payments=payments, memory=FakeRungMemory(), ladder=Ladder.starting_at(30 * MINUTE)
        ),
    ]

    initiated, refunding = [await sweep.run_once(T0) for sweep in sweeps]

    assert payments.recovered == ["i-old", "r-old"]
    assert (initiated.found, initiated.acted) == (1, 1)
    assert (refunding.found, refunding.acted) == (1, 1)
    assert [a.attempt_id.split(":")[0] for a in payments.attempts.values()] == [
        "initiated",
        "refunding",
    ]


async def test_a_refund_escalated_to_review_is_named_in_the_report() -> None:
    payments = FakePayments(
        payment("r", PaymentStatus.REFUNDING, age=timedelta(days=2)),
        outcome=RecoveryOutcome.ESCALATED,
    )
    sweep = RefundingSweep(
        payments=payments, memory=FakeRungMemory(), ladder=Ladder.starting_at(30 * MINUTE)
    )

    report = await sweep.run_once(T0)

    assert [a.rung for a in payments.attempts.values()] == [3]  # found late: its rung now
    assert report.acted == 1
    assert report.notes == ("r (deposit): escalated to manual review",)


async def test_expired_holds_are_released_in_batches_until_none_are_left() -> None:
    wallet = FakeWallet(expired=250)

    report = await ExpiredHoldsSweep(wallet=wallet).run_once(T0)

    assert (report.found, report.acted, wallet.calls) == (250, 250, 4)


async def test_stalled_groups_and_dead_letters_are_reported() -> None:
    healthy = GroupHealth("s.payment", "saga", lag=3, pending=2, stalled=0)
    stalled = GroupHealth("s.payment", "wallet", lag=40, pending=5, stalled=2)
    pipeline = FakePipeline(
        StreamHealth("s.payment", dead_letters=1, groups=(healthy, stalled)),
        StreamHealth("s.wallet", dead_letters=0),
    )
    sweep = PipelineSweep(
        pipeline=pipeline, streams=["s.payment", "s.wallet"], stalled_after=5 * MINUTE
    )

    report = await sweep.run_once(T0)

    assert pipeline.asked_ms == 300_000
    assert (report.found, report.acted) == (2, 0)
    assert report.notes == (
        "s.payment / wallet: 2 stalled of 5 pending, lag 40",
        "s.payment.dlq: 1 dead letters",
    )


class _OneProviderDown(FakePayments):
    """The payment service answers, but the recovery of `down_ids` meets an outage (their
    provider, or its breaker, refuses)."""

    def __init__(self, *payments: PaymentView, down_ids: set[str]) -> None:
        super().__init__(*payments, outcome=RecoveryOutcome.SETTLED)
        self.down_ids = down_ids
        self.asked: list[str] = []

    async def recover(self, attempt: RecoveryAttempt) -> RecoveryResult:
        self.asked.append(attempt.payment_id)
        if attempt.payment_id in self.down_ids:
            raise DependencyUnavailable("gateway unavailable: sim-secondary breaker open")
        return await super().recover(attempt)


async def test_one_payment_meeting_an_outage_does_not_hold_back_the_others() -> None:
    payments = _OneProviderDown(
        payment("at-the-down-provider", age=3 * MINUTE),
        payment("elsewhere-1", age=2 * MINUTE),
        payment("elsewhere-2", age=2.5 * MINUTE),
        down_ids={"at-the-down-provider"},
    )
    memory = FakeRungMemory()

    report = await pending_sweep(payments, memory).run_once(T0)

    assert payments.recovered == ["elsewhere-1", "elsewhere-2"]
    assert report.status is SweepStatus.UNAVAILABLE  # not all it should have done
    assert "breaker open" in report.notes[-1]
    # Not remembered as tried: asked again at the next round.
    assert "at-the-down-provider" not in memory.rungs


async def test_several_outages_in_a_row_end_the_round() -> None:
    stuck = [payment(f"p{i}", age=(2 + i) * MINUTE) for i in range(6)]
    payments = _OneProviderDown(*stuck, down_ids={p.payment_id for p in stuck})

    report = await pending_sweep(payments).run_once(T0)

    assert payments.asked == ["p0", "p1", "p2"]  # then the round gives up
    assert report.status is SweepStatus.UNAVAILABLE

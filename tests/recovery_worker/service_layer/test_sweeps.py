from datetime import timedelta

from common.errors import DependencyUnavailable, NotFound
from recovery_worker.domain.ladder import Ladder
from recovery_worker.domain.model import (
    GroupHealth,
    PaymentStatus,
    StreamHealth,
    SweepStatus,
    SyncAnswer,
)
from recovery_worker.service_layer.sweeps import (
    ExpiredHoldsSweep,
    InitiatedSweep,
    PendingSweep,
    PipelineSweep,
    RefundingSweep,
)
from tests.recovery_worker.fakes import (
    T0,
    FakeGateway,
    FakePayments,
    FakePipeline,
    FakeRungMemory,
    FakeWallet,
    payment,
)

MINUTE = timedelta(minutes=1)


def pending_sweep(
    payments: FakePayments, gateway: FakeGateway, memory: FakeRungMemory | None = None
) -> PendingSweep:
    return PendingSweep(
        payments=payments,
        gateway=gateway,
        memory=memory or FakeRungMemory(),
        ladder=Ladder.starting_at(MINUTE),
    )


async def test_pending_past_the_threshold_is_synced_and_a_recent_one_left_alone() -> None:
    payments = FakePayments(
        payment("old", age=2 * MINUTE, operation="op-old"),
        payment("new", age=timedelta(seconds=30), operation="op-new"),
        payment("done", PaymentStatus.REFUNDING, age=2 * MINUTE, operation="op-done"),
    )
    gateway = FakeGateway(SyncAnswer.SETTLED)

    report = await pending_sweep(payments, gateway).run_once(T0)

    assert gateway.synced == ["op-old"]
    assert (report.status, report.found, report.acted, report.skipped) == (
        SweepStatus.DONE,
        1,
        1,
        0,
    )


async def test_an_unknown_answer_waits_for_the_next_rung() -> None:
    payments = FakePayments(payment("p", age=2 * MINUTE, operation="op"))
    gateway, memory = FakeGateway(SyncAnswer.UNKNOWN), FakeRungMemory()
    sweep = pending_sweep(payments, gateway, memory)

    first = await sweep.run_once(T0)
    too_soon = await sweep.run_once(T0 + 2 * MINUTE)  # 4 min old: still the first rung
    next_rung = await sweep.run_once(T0 + 3 * MINUTE)  # 5 min old

    assert gateway.synced == ["op", "op"]
    assert (first.acted, too_soon.acted, too_soon.skipped, next_rung.acted) == (1, 0, 1, 1)


async def test_a_payment_that_moved_starts_the_ladder_again() -> None:
    memory = FakeRungMemory()
    gateway = FakeGateway()
    await pending_sweep(FakePayments(payment("p", age=2 * MINUTE)), gateway, memory).run_once(T0)

    # It changed since (a new updated_at) and is stuck again.
    moved = FakePayments(payment("p", age=MINUTE))
    await pending_sweep(moved, gateway, memory).run_once(T0)

    assert len(gateway.synced) == 2


async def test_an_unreachable_gateway_interrupts_the_round_without_climbing_the_ladder() -> None:
    payments = FakePayments(payment("p", age=2 * MINUTE))
    gateway, memory = FakeGateway(), FakeRungMemory()
    gateway.error = DependencyUnavailable("gateway service unavailable: UNAVAILABLE")

    report = await pending_sweep(payments, gateway, memory).run_once(T0)

    assert report.status is SweepStatus.UNAVAILABLE
    assert memory.rungs == {}
    gateway.error = None
    assert (await pending_sweep(payments, gateway, memory).run_once(T0)).acted == 1


async def test_an_operation_the_gateway_refuses_is_noted_and_the_rest_go_on() -> None:
    payments = FakePayments(payment("a", age=2 * MINUTE), payment("b", age=3 * MINUTE))
    gateway = FakeGateway()
    gateway.error = NotFound("operation", "op")

    memory = FakeRungMemory()
    report = await pending_sweep(payments, gateway, memory).run_once(T0)
    again = await pending_sweep(payments, gateway, memory).run_once(T0)

    assert (report.status, report.found, report.skipped) == (SweepStatus.DONE, 2, 2)
    assert len(report.notes) == 2
    assert again.notes == ()  # asked again at the next rung, not every round


async def test_pending_without_an_operation_is_reported_not_synced() -> None:
    gateway = FakeGateway()
    sweep = pending_sweep(FakePayments(payment("p", age=2 * MINUTE, operation="")), gateway)

    report = await sweep.run_once(T0)

    assert gateway.synced == []
    assert report.skipped == 1
    assert "without a gateway operation" in report.notes[0]


async def test_a_payment_service_outage_is_reported_unavailable() -> None:
    payments = FakePayments(payment("p", age=2 * MINUTE))
    payments.down = True

    report = await pending_sweep(payments, FakeGateway()).run_once(T0)

    assert report.status is SweepStatus.UNAVAILABLE
    assert "payment service" in report.notes[0]


async def test_initiated_and_refunding_past_their_thresholds_are_reported_only() -> None:
    payments = FakePayments(
        payment("i-old", PaymentStatus.INITIATED, age=2 * MINUTE),
        payment("i-new", PaymentStatus.INITIATED, age=timedelta(seconds=10)),
        payment("r-old", PaymentStatus.REFUNDING, age=timedelta(minutes=31)),
        payment("r-new", PaymentStatus.REFUNDING, age=timedelta(minutes=29)),
    )

    initiated = await InitiatedSweep(payments=payments, after=MINUTE).run_once(T0)
    refunding = await RefundingSweep(payments=payments, after=30 * MINUTE).run_once(T0)

    assert (initiated.found, initiated.acted) == (1, 0)
    assert initiated.notes[0].startswith("i-old (deposit)")
    assert (refunding.found, refunding.acted) == (1, 0)
    assert refunding.notes[0].startswith("r-old")


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

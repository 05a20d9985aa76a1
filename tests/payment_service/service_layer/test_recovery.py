"""RecoverPayment on fakes: the recovery worker's attempts at a stuck payment ask the provider
again or resume the saga, are noted once each in the audit trail, never fail a payment on an
unknown answer, and send a refund that stays unsettled to an operator."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from common.errors import DependencyUnavailable, ValidationError
from payment_service.domain.recovery import MAX_RECOVERY_ATTEMPTS, RecoveryOutcome, RecoveryRequest
from payment_service.domain.review import ReviewReason
from payment_service.domain.saga import ProviderAnswer
from payment_service.domain.status import PaymentStatus
from payment_service.service_layer.recovery import RecoveryRecord
from tests.payment_service.service_layer.test_sagas import funded, steps, withdraw
from tests.payment_service.world import ACCOUNT, World

S = PaymentStatus
NEXT = datetime(2026, 1, 1, 12, 5, tzinfo=UTC)
NOT_PROCESSED = "not_processed_by_provider"


async def recover(
    world: World, payment_id: str, attempt: str = "a0", rung: int = 0
) -> RecoveryRecord:
    return await world.recovery.recover(
        RecoveryRequest(
            payment_id=payment_id,
            attempt_id=attempt,
            requested_by="recovery-worker",
            rung=rung,
            next_attempt_at=NEXT,
        )
    )


async def timed_out_deposit(world: World) -> str:
    """A deposit whose charge the provider never answered: initiated, its outcome unknown."""
    world.gateway.answer = ProviderAnswer.UNKNOWN
    payment_id = await world.create()
    with pytest.raises(DependencyUnavailable):
        await world.charge(payment_id)
    return payment_id


async def refunding_deposit(world: World) -> str:
    payment_id = await world.deposit()
    del world.wallet.accounts[ACCOUNT]  # the credit can never apply
    await world.handlers.charge_succeeded(event_id="c1", payment_id=payment_id, operation_id="op")
    assert (await world.queries.get_payment(payment_id)).status is S.REFUNDING
    return payment_id


async def test_a_pending_payment_is_asked_about_and_the_attempt_noted_once() -> None:
    world = World()
    payment_id = await world.deposit()
    world.gateway.sync_status = "succeeded"

    first = await recover(world, payment_id, rung=1)
    again = await recover(world, payment_id, rung=1)

    assert world.gateway.synced == [f"op-{payment_id}"]
    assert (first.outcome, again.outcome) == (RecoveryOutcome.SETTLED, RecoveryOutcome.SETTLED)
    assert first.step is not None
    assert first.step == again.step
    assert first.step.event_type == "recovery.sync_requested"
    assert dict(first.step.data) == {
        "attempt_id": "a0",
        "requested_by": "recovery-worker",
        "rung": "1",
        "outcome": "settled",
        "operation_id": f"op-{payment_id}",
        "answer": "succeeded",
        "next_attempt_at": NEXT.isoformat(),
    }
    assert (await steps(world, payment_id)).count("recovery.sync_requested") == 1


async def test_an_unknown_answer_is_noted_and_never_fails_the_payment() -> None:
    world = World()
    payment_id = await world.deposit()
    world.gateway.sync_status = "created"

    records = [await recover(world, payment_id, f"a{rung}", rung) for rung in range(5)]

    assert {r.outcome for r in records} == {RecoveryOutcome.UNKNOWN}
    assert [r.step.data["answer"] for r in records if r.step] == ["unknown"] * 5
    assert (await world.queries.get_payment(payment_id)).status is S.PENDING


async def test_a_timed_out_charge_keeps_its_operation_and_is_asked_about_not_sent_again() -> None:
    world = World()
    payment_id = await timed_out_deposit(world)
    with pytest.raises(DependencyUnavailable):
        await world.charge(payment_id)  # the saga's own retry, with the same key

    record = await recover(world, payment_id)

    payment = await world.queries.get_payment(payment_id)
    assert (payment.status, payment.gateway_operation_id) == (S.INITIATED, f"op-{payment_id}")
    assert (await steps(world, payment_id)).count("charge.outcome_unknown") == 1
    assert world.gateway.synced == [f"op-{payment_id}"]
    assert world.gateway.calls == [f"{payment_id}:charge"] * 2  # the recovery sent nothing
    assert record.outcome is RecoveryOutcome.UNKNOWN


async def test_a_provider_confirming_the_charge_never_happened_fails_the_deposit() -> None:
    world = World()
    payment_id = await timed_out_deposit(world)
    world.gateway.sync_status, world.gateway.sync_reason = "failed", NOT_PROCESSED

    record = await recover(world, payment_id)
    # The gateway failed its operation on the provider's word and emitted charge.failed.
    await world.handlers.charge_failed(
        event_id="f1", payment_id=payment_id, operation_id=f"op-{payment_id}", reason=NOT_PROCESSED
    )

    payment = await world.queries.get_payment(payment_id)
    assert record.outcome is RecoveryOutcome.SETTLED
    assert record.step is not None
    assert record.step.data["answer"] == f"failed: {NOT_PROCESSED}"
    assert (payment.status, payment.failure_reason) == (S.FAILED, NOT_PROCESSED)
    assert world.wallet.credits == {}


async def test_a_provider_confirming_success_after_a_timeout_completes_the_deposit() -> None:
    world = World()
    payment_id = await timed_out_deposit(world)
    world.gateway.sync_status = "succeeded"

    record = await recover(world, payment_id)
    await world.handlers.charge_succeeded(
        event_id="s1", payment_id=payment_id, operation_id=f"op-{payment_id}"
    )

    assert record.outcome is RecoveryOutcome.SETTLED
    assert (await world.queries.get_payment(payment_id)).status is S.COMPLETED
    assert world.wallet.available[ACCOUNT] == 1000


async def test_a_payout_the_provider_never_processed_releases_the_hold_and_fails() -> None:
    world = funded()
    payment_id = await withdraw(world)
    world.gateway.answer = ProviderAnswer.UNKNOWN
    with pytest.raises(DependencyUnavailable):
        await world.saga.ask_provider(payment_id)
    assert world.wallet.available[ACCOUNT] == 9000  # held while the outcome is unknown
    world.gateway.sync_status, world.gateway.sync_reason = "failed", NOT_PROCESSED

    payment = (await recover(world, payment_id)).payment
    await world.handlers.provider_failed(
        event_id="f1",
        payment_id=payment_id,
        operation="payout",
        operation_id=payment.gateway_operation_id,
        reason=NOT_PROCESSED,
    )

    assert (await world.queries.get_payment(payment_id)).status is S.FAILED
    assert world.wallet.available[ACCOUNT] == 10_000


async def test_a_saga_that_never_asked_the_provider_runs_its_step_again() -> None:
    world = World()
    payment_id = await world.create()  # its payment.initiated event was lost, say

    record = await recover(world, payment_id)

    assert record.outcome is RecoveryOutcome.RESUMED
    assert record.step is not None
    assert record.step.event_type == "recovery.resume_requested"
    assert world.gateway.calls == [f"{payment_id}:charge"]
    assert (await world.queries.get_payment(payment_id)).status is S.PENDING


async def test_a_refund_left_unsettled_by_the_last_attempt_goes_to_an_operator() -> None:
    world = World()
    payment_id = await refunding_deposit(world)
    world.gateway.answer = ProviderAnswer.UNKNOWN
    with pytest.raises(DependencyUnavailable):
        await world.saga.compensate(payment_id)
    world.gateway.sync_status = "created"

    outcomes = [(await recover(world, payment_id, f"a{i}", i)).outcome for i in range(3)]
    repeat = await recover(world, payment_id, "a2", 2)

    assert MAX_RECOVERY_ATTEMPTS == 3
    assert outcomes == [
        RecoveryOutcome.UNKNOWN,
        RecoveryOutcome.UNKNOWN,
        RecoveryOutcome.ESCALATED,
    ]
    assert repeat.outcome is RecoveryOutcome.ESCALATED
    assert world.gateway.synced == [f"op-{payment_id}:refund"] * 3
    assert (await world.queries.get_payment(payment_id)).status is S.REQUIRES_MANUAL_REVIEW
    [case] = world.store.cases.values()
    assert (case.payment_id, case.reason_code) == (payment_id, ReviewReason.REFUND_STALLED)
    trail = await steps(world, payment_id)
    assert trail.count("refund.outcome_unknown") == 1
    assert trail.count("recovery.sync_requested") == 3


async def test_a_refund_the_provider_settled_is_not_counted_against_it() -> None:
    world = World()
    payment_id = await refunding_deposit(world)
    for _ in range(2):  # resumed twice: the accepted refund is noted once
        await world.saga.compensate(payment_id)
    world.gateway.sync_status = "succeeded"

    records = [await recover(world, payment_id, f"a{i}", i) for i in range(4)]

    assert {r.outcome for r in records} == {RecoveryOutcome.SETTLED}
    payment = await world.queries.get_payment(payment_id)
    assert (payment.status, payment.saga.recovery_attempts) == (S.REFUNDING, 0)
    assert (await steps(world, payment_id)).count("refund.accepted") == 1


async def test_an_unreachable_gateway_notes_nothing_and_is_asked_again() -> None:
    world = World()
    payment_id = await world.deposit()
    world.gateway.unavailable = True

    with pytest.raises(DependencyUnavailable):
        await recover(world, payment_id)
    world.gateway.unavailable = False
    record = await recover(world, payment_id)

    assert record.outcome is RecoveryOutcome.UNKNOWN
    assert (await steps(world, payment_id)).count("recovery.sync_requested") == 1


async def test_an_operation_the_gateway_does_not_know_is_noted_with_why() -> None:
    world = World()
    payment_id = await refunding_deposit(world)
    await world.saga.compensate(payment_id)
    payment = await world.queries.get_payment(payment_id)
    payment.saga.refund_operation_id = "lost"
    world.store.rows[payment_id] = payment

    record = await recover(world, payment_id)

    assert record.outcome is RecoveryOutcome.UNKNOWN
    assert record.step is not None
    assert "not found" in record.step.error


async def test_a_payment_that_moved_on_is_left_alone_and_nothing_noted() -> None:
    world = World()
    payment_id = await world.deposit()
    await world.handlers.charge_succeeded(event_id="s", payment_id=payment_id, operation_id="op")

    record = await recover(world, payment_id)

    assert (record.outcome, record.step) == (RecoveryOutcome.NOT_STUCK, None)
    assert world.gateway.synced == []
    assert not any(s.startswith("recovery.") for s in await steps(world, payment_id))


async def test_an_attempt_needs_an_id_and_a_caller() -> None:
    world = World()
    payment_id = await world.deposit()
    for request in (
        RecoveryRequest(payment_id, "", "recovery-worker"),
        RecoveryRequest(payment_id, "a", ""),
        RecoveryRequest(payment_id, "a", "recovery-worker", rung=-1),
    ):
        with pytest.raises(ValidationError):
            await world.recovery.recover(request)

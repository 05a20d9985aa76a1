from datetime import UTC, datetime, timedelta

import pytest

from common.errors import IdempotencyConflict
from common.money import Money
from payment_service.domain.events import ReviewRequested
from payment_service.domain.model import Payment
from payment_service.domain.recovery import RecoveryAction
from payment_service.domain.requests import DepositRequest
from payment_service.domain.saga import ProviderAnswer
from payment_service.domain.status import (
    ALLOWED,
    FINAL,
    SETTLED,
    TERMINAL,
    InvalidTransition,
    PaymentStatus,
)

S = PaymentStatus


def deposit(amount: int = 1000) -> Payment:
    return Payment.deposit(
        DepositRequest(
            idempotency_key="key-1",
            account_id="0b7d4d1e-55f4-4c43-8c3e-2a51f3c1d6a1",
            amount=Money(amount, "USD"),
            payment_method="pm_card_ok",
        )
    )


def test_a_deposit_starts_initiated_with_one_recorded_change() -> None:
    payment = deposit()
    assert payment.status is S.INITIATED
    assert payment.version == 1
    assert [(c.from_status, c.to_status) for c in payment.new_changes] == [(None, S.INITIATED)]
    assert [e.to_status for e in payment.pull_events()] == ["initiated"]


def test_happy_path_records_every_change_in_order() -> None:
    payment = deposit()
    payment.mark_pending("op-1")
    payment.complete()
    assert payment.status is S.COMPLETED
    assert payment.gateway_operation_id == "op-1"
    assert [c.sequence for c in payment.new_changes] == [1, 2, 3]
    assert [e.to_status for e in payment.pull_events()] == ["initiated", "pending", "completed"]
    assert payment.pull_events() == []


def test_failure_keeps_the_reason() -> None:
    payment = deposit()
    payment.mark_pending("op-1")
    payment.fail("card_declined")
    assert payment.status is S.FAILED
    assert payment.failure_reason == "card_declined"
    assert payment.new_changes[-1].reason == "card_declined"


@pytest.mark.parametrize("final", sorted(FINAL))
def test_final_states_are_final(final: PaymentStatus) -> None:
    assert ALLOWED[final] == frozenset()


@pytest.mark.parametrize("settled", sorted(SETTLED))
def test_settled_states_move_only_to_refunded_ones(settled: PaymentStatus) -> None:
    assert ALLOWED[settled] <= {S.PARTIALLY_REFUNDED, S.REFUNDED}
    assert settled in TERMINAL


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ((), S.REFUNDED),  # nothing was taken, so nothing can be refunded
        ((S.PENDING,), S.INITIATED),
        ((S.PENDING, S.COMPLETED), S.FAILED),
        ((S.PENDING, S.FAILED), S.COMPLETED),
        ((S.PENDING, S.FAILED), S.PENDING),
    ],
)
def test_states_never_move_backwards(path: tuple[PaymentStatus, ...], target: S) -> None:
    payment = deposit()
    for step in path:
        payment._move(step, "")
    version = payment.version
    with pytest.raises(InvalidTransition):
        payment._move(target, "")
    assert payment.version == version


def test_every_transition_in_the_table_moves_forward() -> None:
    order = [S.INITIATED, S.PENDING, S.REFUNDING, S.REQUIRES_MANUAL_REVIEW]
    for source, targets in ALLOWED.items():
        for target in targets:
            assert target not in order[: order.index(source) + 1] if source in order else True


def request(amount: int = 1000, *, method: str = "pm_card_ok", caller: str = "c") -> DepositRequest:
    return DepositRequest(
        idempotency_key="key-1",
        account_id="0b7d4d1e-55f4-4c43-8c3e-2a51f3c1d6a1",
        amount=Money(amount, "USD"),
        payment_method=method,
        caller=caller,
    )


def test_a_replayed_key_must_ask_for_the_same_payment() -> None:
    claim = request(1000).claim("p-1")
    claim.check_same_request(request(1000).fingerprint)
    claim.check_same_request(request(1000, caller="someone else").fingerprint)
    for other in (request(999), request(1000, method="pm_card_declined")):
        with pytest.raises(IdempotencyConflict):
            claim.check_same_request(other.fingerprint)


def pending_deposit() -> Payment:
    payment = deposit()
    payment.record_provider_answer(ProviderAnswer.ACCEPTED, operation_id="op-1", reason="")
    payment.pull_events()
    return payment


def test_the_charge_answer_moves_only_an_initiated_payment() -> None:
    payment = deposit()
    payment.record_provider_answer(ProviderAnswer.UNKNOWN, operation_id="op-1", reason="")
    assert payment.status is S.INITIATED  # unknown: never failed on a guess
    payment.record_provider_answer(
        ProviderAnswer.DECLINED, operation_id="op-1", reason="card_declined"
    )
    assert (payment.status, payment.failure_reason) == (S.FAILED, "card_declined")
    payment.record_provider_answer(ProviderAnswer.ACCEPTED, operation_id="op-1", reason="")
    assert payment.status is S.FAILED


def test_a_credited_charge_completes_and_a_refused_credit_starts_a_refund() -> None:
    credited = pending_deposit()
    credited.apply_charge_succeeded(operation_id="op-1", credited=True)
    assert credited.status is S.COMPLETED
    refused = pending_deposit()
    refused.apply_charge_succeeded(operation_id="op-1", credited=False, credit_refused="frozen")
    assert (refused.status, refused.failure_reason) == (S.REFUNDING, "frozen")


def test_a_success_reported_twice_changes_nothing_the_second_time() -> None:
    payment = pending_deposit()
    payment.apply_charge_succeeded(operation_id="op-1", credited=True)
    payment.pull_events()
    payment.apply_charge_succeeded(operation_id="op-1", credited=False)
    assert payment.status is S.COMPLETED
    assert payment.pull_events() == []


def test_a_success_after_a_failure_asks_for_review_and_keeps_the_final_state() -> None:
    payment = pending_deposit()
    payment.apply_charge_failed(operation_id="op-1", reason="card_declined")
    payment.pull_events()
    payment.apply_charge_succeeded(operation_id="op-1", credited=False)
    assert payment.status is S.FAILED
    (review,) = payment.pull_events()
    assert isinstance(review, ReviewRequested)
    assert (review.provider_event, review.status) == ("charge.succeeded", "failed")


def test_a_decline_after_completion_asks_for_review() -> None:
    payment = pending_deposit()
    payment.apply_charge_succeeded(operation_id="op-1", credited=True)
    payment.pull_events()
    payment.apply_charge_failed(operation_id="op-1", reason="card_declined")
    assert payment.status is S.COMPLETED
    assert [type(e) for e in payment.pull_events()] == [ReviewRequested]


@pytest.mark.parametrize("source", list(PaymentStatus))
@pytest.mark.parametrize("target", list(PaymentStatus))
def test_every_pair_of_states_moves_exactly_as_the_table_says(
    source: PaymentStatus, target: PaymentStatus
) -> None:
    payment = deposit()
    payment.status = source
    version = payment.version
    if target in ALLOWED[source]:
        payment._move(target, "")
        assert (payment.status, payment.version) == (target, version + 1)
    else:
        with pytest.raises(InvalidTransition):
            payment._move(target, "")
        assert (payment.status, payment.version) == (source, version)


def test_an_unknown_answer_keeps_the_operation_to_ask_about_and_notes_it_once() -> None:
    payment = deposit()
    payment.begin_provider_call()
    for _ in range(3):  # the step retried with the same key, unanswered each time
        payment.record_provider_answer(ProviderAnswer.UNKNOWN, operation_id="op-1", reason="")
    assert (payment.status, payment.gateway_operation_id) == (S.INITIATED, "op-1")
    events = [s.event_type for s in payment.new_steps]
    assert events.count("charge.outcome_unknown") == 1


def refunding() -> Payment:
    payment = deposit()
    payment.mark_pending("op-1")
    payment.apply_charge_succeeded(operation_id="op-1", credited=False, credit_refused="closed")
    return payment


def test_what_moving_a_stuck_payment_on_means_depends_on_where_it_stands() -> None:
    fresh, asked, unknown, pending = deposit(), deposit(), deposit(), deposit()
    asked.begin_provider_call()
    unknown.begin_provider_call()
    unknown.record_provider_answer(ProviderAnswer.UNKNOWN, operation_id="op-u", reason="")
    pending.mark_pending("op-p")
    refund_to_start, refund_sent = refunding(), refunding()
    refund_sent.compensation_call()
    refund_sent.record_compensation_answer(ProviderAnswer.ACCEPTED, operation_id="op-r", reason="")
    done = deposit()
    done.mark_pending("op-d")
    done.complete()

    assert fresh.recovery_action() == (RecoveryAction.RESUME, "")
    assert asked.recovery_action() == (RecoveryAction.RESUME, "")  # the gateway never answered
    assert unknown.recovery_action() == (RecoveryAction.SYNC, "op-u")
    assert pending.recovery_action() == (RecoveryAction.SYNC, "op-p")
    assert refund_to_start.recovery_action() == (RecoveryAction.RESUME, "")
    assert refund_sent.recovery_action() == (RecoveryAction.SYNC, "op-r")
    assert done.recovery_action() is None


def test_a_failed_refund_attempt_is_not_asked_about_again_its_successor_is_started() -> None:
    payment = refunding()
    payment.compensation_call()
    payment.record_compensation_answer(ProviderAnswer.ACCEPTED, operation_id="op-r", reason="")
    payment.apply_compensation_outcome(succeeded=False, operation_id="op-r", reason="declined")
    assert payment.recovery_action() == (RecoveryAction.RESUME, "")


def test_the_resume_sweep_notes_its_visit_without_changing_updated_at() -> None:
    payment = deposit()
    changed = payment.updated_at
    at = datetime.now(UTC) + timedelta(minutes=1)
    payment.note_resumed(at)
    assert payment.updated_at == changed
    assert payment.saga.resumed_at == at.isoformat()
    assert payment.new_steps[-1].event_type == "saga.resumed"

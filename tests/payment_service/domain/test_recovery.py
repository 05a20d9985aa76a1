"""Moving a stuck payment on."""

from datetime import UTC, datetime, timedelta

from payment_service.domain.recovery import RecoveryAction
from payment_service.domain.saga import ProviderAnswer
from tests.payment_service.domain.builders import deposit, refunding


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

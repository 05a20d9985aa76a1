"""What the provider says of a deposit's charge."""

from payment_service.domain.events import ReviewRequested
from payment_service.domain.status import PaymentStatus
from tests.payment_service.domain.builders import pending_deposit

S = PaymentStatus


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

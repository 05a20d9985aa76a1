"""Which changes of a payment ask for a review case, and what a resolution may do to it."""

import pytest

from payment_service.domain.errors import ResolutionContradictsPayment, ReviewPaymentInFlight
from payment_service.domain.events import PaymentStatusChanged
from payment_service.domain.model import Payment
from payment_service.domain.review import Resolution, ReviewReason
from payment_service.domain.saga import ProviderAnswer
from payment_service.domain.status import PaymentStatus
from tests.payment_service.domain.builders import decision, deposit

S = PaymentStatus


def in_review() -> Payment:
    """A deposit whose credit was impossible and whose compensation refund failed 3 times."""
    payment = deposit()
    payment.mark_pending("op-1")
    payment.apply_charge_succeeded(operation_id="op-1", credited=False, credit_refused="closed")
    for attempt in range(3):
        payment.compensation_call()
        payment.record_compensation_answer(
            ProviderAnswer.DECLINED, operation_id=f"r{attempt}", reason="refund_declined"
        )
    assert payment.status is S.REQUIRES_MANUAL_REVIEW
    return payment


def settled(status: PaymentStatus) -> Payment:
    payment = deposit()
    payment.mark_pending("op-1")
    if status is S.COMPLETED:
        payment.complete()
    else:
        payment.fail("card_declined")
    payment.new_reviews.clear()
    payment.pull_events()
    return payment


def test_a_compensation_failing_three_times_opens_a_case() -> None:
    payment = in_review()
    [opening] = payment.new_reviews
    assert opening.reason_code is ReviewReason.COMPENSATION_FAILED
    assert opening.source == "status.requires_manual_review"
    assert "3 times" in opening.reason


def test_a_capture_refused_after_a_payout_opens_a_capture_case() -> None:
    from common.money import Money
    from payment_service.domain.requests import WithdrawalRequest

    payment = Payment.withdrawal(
        WithdrawalRequest("k", "0b7d4d1e-55f4-4c43-8c3e-2a51f3c1d6a1", Money(5, "USD"), "acct")
    )
    payment.record_hold("h1")
    payment.begin_provider_call()
    payment.mark_pending("op")
    payment.capture_refused("payout", "hold expired")
    assert payment.status is S.REQUIRES_MANUAL_REVIEW
    assert [o.reason_code for o in payment.new_reviews] == [ReviewReason.CAPTURE_FAILED]


def test_a_provider_contradicting_a_final_state_opens_a_case_and_keeps_the_state() -> None:
    payment = settled(S.FAILED)
    payment.apply_charge_succeeded(operation_id="op-1", credited=False)
    assert payment.status is S.FAILED
    [opening] = payment.new_reviews
    assert (opening.reason_code, opening.source) == (
        ReviewReason.PROVIDER_CONTRADICTION,
        "charge.succeeded",
    )


def test_resolving_a_payment_in_review_moves_it_through_the_state_machine() -> None:
    payment = in_review()
    payment.pull_events()
    payment.resolve_review("case-1", decision(Resolution.REFUNDED))
    assert payment.status is S.REFUNDED
    assert payment.saga.refunded_minor == payment.amount.amount_minor
    [event] = payment.pull_events()
    assert isinstance(event, PaymentStatusChanged)
    assert (event.from_status, event.to_status) == ("requires_manual_review", "refunded")
    resolved = [s for s in payment.new_steps if s.event_type == "review.resolved"]
    assert resolved[0].data["case_id"] == "case-1"
    assert resolved[0].data["resolved_by"] == "alice"
    assert payment.new_changes[-1].reason.startswith("resolved by alice")


def test_resolving_as_failed_keeps_the_note_as_the_failure_reason() -> None:
    payment = in_review()
    payment.resolve_review("case-1", decision(Resolution.FAILED))
    assert payment.status is S.FAILED
    assert "refunded by hand" in payment.failure_reason


def test_a_deposit_resolved_as_completed_needs_its_review_credit() -> None:
    payment = in_review()
    assert payment.review_credit_needed(Resolution.COMPLETED)
    assert not payment.review_credit_needed(Resolution.REFUNDED)
    payment.resolve_review("case-1", decision(Resolution.COMPLETED), credited=True)
    assert payment.status is S.COMPLETED
    credit = [s for s in payment.new_steps if s.event_type == "credit.completed"][-1]
    assert credit.data["operation_ref"] == f"{payment.payment_id}:review-credit"


@pytest.mark.parametrize(
    ("status", "resolution"),
    [(S.COMPLETED, Resolution.COMPLETED), (S.FAILED, Resolution.FAILED)],
)
def test_a_final_payment_only_records_a_resolution_that_agrees(
    status: PaymentStatus, resolution: Resolution
) -> None:
    payment = settled(status)
    version = payment.version
    payment.resolve_review("case-1", decision(resolution))
    assert (payment.status, payment.version) == (status, version)
    assert payment.pull_events() == []
    assert payment.new_steps[-1].event_type == "review.resolved"


@pytest.mark.parametrize(
    ("status", "resolution"),
    [
        (S.COMPLETED, Resolution.FAILED),
        (S.COMPLETED, Resolution.REFUNDED),
        (S.FAILED, Resolution.COMPLETED),
    ],
)
def test_a_resolution_that_would_move_a_final_state_is_refused(
    status: PaymentStatus, resolution: Resolution
) -> None:
    payment = settled(status)
    steps = payment.steps
    with pytest.raises(ResolutionContradictsPayment):
        payment.resolve_review("case-1", decision(resolution))
    assert (payment.status, payment.steps) == (status, steps)


def test_a_payment_whose_saga_still_runs_cannot_be_resolved() -> None:
    payment = deposit()
    payment.mark_pending("op-1")
    with pytest.raises(ReviewPaymentInFlight):
        payment.resolve_review("case-1", decision(Resolution.COMPLETED))

"""Asking the provider, and what the gateway's answer means."""

from payment_service.domain.saga import ProviderAnswer
from payment_service.domain.status import PaymentStatus
from tests.payment_service.domain.builders import deposit

S = PaymentStatus


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


def test_an_unknown_answer_keeps_the_operation_to_ask_about_and_notes_it_once() -> None:
    payment = deposit()
    payment.begin_provider_call()
    for _ in range(3):  # the step retried with the same key, unanswered each time
        payment.record_provider_answer(ProviderAnswer.UNKNOWN, operation_id="op-1", reason="")
    assert (payment.status, payment.gateway_operation_id) == (S.INITIATED, "op-1")
    events = [s.event_type for s in payment.new_steps]
    assert events.count("charge.outcome_unknown") == 1

"""Moves through the state machine, recorded in order, refused off the table."""

import pytest

from payment_service.domain.status import ALLOWED, InvalidTransition, PaymentStatus
from tests.payment_service.domain.builders import deposit

S = PaymentStatus


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

"""Creating a payment."""

from payment_service.domain.status import PaymentStatus
from tests.payment_service.domain.builders import deposit

S = PaymentStatus


def test_a_deposit_starts_initiated_with_one_recorded_change() -> None:
    payment = deposit()
    assert payment.status is S.INITIATED
    assert payment.version == 1
    assert [(c.from_status, c.to_status) for c in payment.new_changes] == [(None, S.INITIATED)]
    assert [e.to_status for e in payment.pull_events()] == ["initiated"]

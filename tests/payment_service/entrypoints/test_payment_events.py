"""The saga's consumer of the payment's own events reads only its triggers: the payment's other
events (pending, completed, failed...) are acknowledged unread."""

from __future__ import annotations

from payment_service.entrypoints.payment_events import PaymentSagaEntrypoint


def test_the_saga_reads_only_its_triggers() -> None:
    handles = PaymentSagaEntrypoint.handles
    for trigger in ("payment.initiated", "payment.funds_held", "payment.refunding"):
        assert handles(trigger), trigger
    for ignored in ("payment.pending", "payment.completed", "payment.failed"):
        assert not handles(ignored), ignored

"""The saga's consumer of the payment's own events: it reads only its triggers (the payment's
other events are acknowledged unread), and charges a deposit from its `payment.initiated`
alone, which carries the recovery point the create recorded."""

from __future__ import annotations

from payment_service.adapters.event_mapping import to_outgoing
from payment_service.domain import events
from payment_service.domain.status import PaymentStatus
from payment_service.entrypoints.payment_events import PaymentSagaEntrypoint
from paysuite.events.v1 import events_pb2
from tests.payment_service.world import World


def test_the_saga_reads_only_its_triggers() -> None:
    handles = PaymentSagaEntrypoint.handles
    for trigger in ("payment.initiated", "payment.funds_held", "payment.refunding"):
        assert handles(trigger), trigger
    for ignored in ("payment.pending", "payment.completed", "payment.failed"):
        assert not handles(ignored), ignored


def initiated(world: World) -> list[events_pb2.EventEnvelope]:
    return [
        to_outgoing(e).envelope
        for e in world.published
        if isinstance(e, events.PaymentStatusChanged) and e.to_status == "initiated"
    ]


async def test_a_deposit_is_charged_from_its_initiated_event_alone() -> None:
    world = World()
    payment_id = await world.create()
    (envelope,) = initiated(world)
    change = events_pb2.PaymentStatusChanged()
    assert envelope.payload.Unpack(change)
    assert change.provider_call == "charge"  # the recovery point, recorded by the create
    await PaymentSagaEntrypoint(world.saga)(envelope)
    assert world.gateway.calls == [f"{payment_id}:charge"]
    assert (await world.queries.get_payment(payment_id)).status is PaymentStatus.PENDING


async def test_an_initiated_event_without_the_recovery_point_records_it_first() -> None:
    """A deposit created by an older version: the saga records the recovery point in a step
    before it charges, as it always did."""
    world = World()
    payment_id = await world.create()
    (envelope,) = initiated(world)
    change = events_pb2.PaymentStatusChanged()
    assert envelope.payload.Unpack(change)
    change.provider_call = ""
    envelope.payload.Pack(change)
    await PaymentSagaEntrypoint(world.saga)(envelope)
    assert world.gateway.calls == [f"{payment_id}:charge"]
    assert (await world.queries.get_payment(payment_id)).status is PaymentStatus.PENDING

"""The saga's consumer of the payment's own events: its stream carries exactly the events it
acts on (nothing there is ignored, nothing it acts on goes elsewhere), and it charges a deposit
from its `payment.initiated` alone, which carries the recovery point the create recorded."""

from __future__ import annotations

from typing import Any

import pytest

from common.events import PAYMENT_SAGA_STREAM, PAYMENT_STREAM
from common.money import Money
from payment_service.adapters.event_mapping import to_outgoing
from payment_service.domain import events
from payment_service.domain.status import PaymentKind, PaymentStatus
from payment_service.entrypoints.payment_events import PaymentSagaEntrypoint
from paysuite.events.v1 import events_pb2
from tests.payment_service.world import World


def test_the_saga_reads_only_its_triggers() -> None:
    handles = PaymentSagaEntrypoint.handles
    for trigger in ("payment.initiated", "payment.funds_held", "payment.refunding"):
        assert handles(trigger), trigger
    for ignored in ("payment.pending", "payment.completed", "payment.failed"):
        assert not handles(ignored), ignored


class RecordingSaga:
    """Stands in for the saga: records which of its steps the entrypoint asked for."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __getattr__(self, step: str) -> Any:
        async def record(*_args: object) -> None:
            self.asked.append(step)

        return record


def every_payment_event(kind: PaymentKind) -> list[events.PaymentEvent]:
    change = {
        "payment_id": "p1",
        "kind": kind.value,
        "from_status": "",
        "amount": Money(500, "USD"),
        "source_account_id": "",
        "destination_account_id": "",
        "failure_reason": "",
        "version": 1,
        "provider_call": "charge" if kind is PaymentKind.DEPOSIT else "",
    }
    return [
        *(
            events.PaymentStatusChanged(**change, to_status=status.value)
            for status in PaymentStatus
        ),
        *(
            events.PaymentStepRecorded("p1", kind.value, step, 1)
            for step in ("funds_held", "compensation_retry")
        ),
        events.ReviewRequested("p1", "completed", "charge.failed", "contradicts", "op1", 1),
    ]


@pytest.mark.parametrize("kind", list(PaymentKind))
async def test_the_saga_stream_carries_exactly_what_the_saga_acts_on(kind: PaymentKind) -> None:
    for event in every_payment_event(kind):
        outgoing = to_outgoing(event)
        saga = RecordingSaga()
        entrypoint = PaymentSagaEntrypoint(saga)  # type: ignore[arg-type]  # a recording stand-in
        if entrypoint.handles(outgoing.envelope.event_type):
            await entrypoint(outgoing.envelope)
        expected = PAYMENT_SAGA_STREAM if saga.asked else PAYMENT_STREAM
        assert outgoing.stream == expected, (kind, outgoing.envelope.event_type, saga.asked)


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

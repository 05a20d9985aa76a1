"""The payment service's consumer of the gateway's events, on fakes: a provider contradicting
an operation that had ended (or reporting it for another amount) opens a case on the payment
and never moves it."""

from __future__ import annotations

from common.events import make_envelope
from payment_service.domain.review import ReviewReason
from payment_service.domain.status import PaymentStatus
from payment_service.entrypoints.gateway_events import GatewayEventsEntrypoint
from paysuite.events.v1 import events_pb2
from tests.payment_service.world import World

NOT_PROCESSED = "not_processed_by_provider"


def gateway_event(
    event_type: str, payment_id: str, status: str, reason: str
) -> events_pb2.EventEnvelope:
    return make_envelope(
        event_type=event_type,
        aggregate_type="operation",
        aggregate_id="op-1",
        aggregate_version=3,
        producer="gateway-service",
        payload=events_pb2.OperationStatusChanged(
            operation_id="op-1",
            kind="charge",
            status=status,
            reference=payment_id,
            failure_reason=reason,
        ),
    )


async def test_a_provider_contradicting_an_ended_operation_opens_a_case_once() -> None:
    world = World()
    payment_id = await world.deposit()
    consume = GatewayEventsEntrypoint(world.handlers)
    await consume(gateway_event("charge.failed", payment_id, "failed", NOT_PROCESSED))
    conflict = gateway_event(
        "operation.conflict",
        payment_id,
        "succeeded",
        "contradicting provider event e1: the provider reports succeeded but the operation"
        " is already failed",
    )

    await consume(conflict)
    await consume(conflict)  # redelivered

    payment = await world.queries.get_payment(payment_id)
    assert (payment.status, payment.failure_reason) == (PaymentStatus.FAILED, NOT_PROCESSED)
    [case] = world.store.cases.values()
    assert case.reason_code is ReviewReason.PROVIDER_CONTRADICTION
    assert [e.source for e in case.evidence] == ["charge.succeeded"]
    steps = [s.event_type for s in await world.queries.audit_trail(payment_id)]
    assert steps.count("review.requested") == 1


async def test_a_report_for_another_amount_opens_a_case_and_leaves_the_payment() -> None:
    world = World()
    payment_id = await world.deposit()

    await GatewayEventsEntrypoint(world.handlers)(
        gateway_event("operation.mismatch", payment_id, "pending", "the provider reports 1 USD")
    )

    assert (await world.queries.get_payment(payment_id)).status is PaymentStatus.PENDING
    [case] = world.store.cases.values()
    assert [e.source for e in case.evidence] == ["operation.mismatch"]


def test_the_group_reads_only_the_outcomes_and_disputes_it_acts_on() -> None:
    handles = GatewayEventsEntrypoint.handles
    for acted_on in ("charge.succeeded", "payout.failed", "refund.succeeded", "operation.conflict"):
        assert handles(acted_on), acted_on
    for ignored in ("charge.pending", "webhook.received", "operation.created", "payout.unknown"):
        assert not handles(ignored), ignored

"""Gateway domain events -> protobuf envelopes on paysuite.gateway.events."""

from __future__ import annotations

from typing import Any

from common.events import GATEWAY_STREAM, OutgoingEvent, make_envelope
from common.grpc.convert import money_to_proto
from gateway_service.domain import events
from paysuite.events.v1 import events_pb2

PRODUCER = "gateway-service"
CONFLICT_EVENT_TYPE = "operation.conflict"


def event_type(event: events.OperationFact) -> str:
    match event:
        case events.OperationStatusChanged():
            return f"{event.kind}.{event.status}"
        case events.ContradictingOutcomeReceived():
            return CONFLICT_EVENT_TYPE
        case _:
            raise TypeError(f"no event type for {type(event).__name__}")


def to_outgoing(event: Any) -> OutgoingEvent:
    if not isinstance(event, events.OperationFact):
        raise TypeError(f"no mapping for {type(event).__name__}")
    envelope = make_envelope(
        event_type=event_type(event),
        aggregate_type="operation",
        aggregate_id=event.operation_id,
        aggregate_version=event.version,
        producer=PRODUCER,
        # The caller's reference (the payment id) names the business flow this belongs to.
        correlation_id=event.reference,
        causation_id=event.causation_id,
        payload=events_pb2.OperationStatusChanged(
            operation_id=event.operation_id,
            kind=event.kind,
            status=event.status,
            amount=money_to_proto(event.amount),
            reference=event.reference,
            idempotency_key=event.idempotency_key,
            provider=event.provider,
            provider_reference=event.provider_reference,
            failure_reason=event.failure_reason,
        ),
    )
    return OutgoingEvent(GATEWAY_STREAM, envelope)

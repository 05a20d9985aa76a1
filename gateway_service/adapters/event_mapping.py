"""Gateway domain events -> protobuf envelopes on paysuite.gateway.events.

<kind>.<status>            OperationStatusChanged   (charge.succeeded, payout.failed, ...): an
                           outcome only; <kind>.pending is retired (nobody acted on it)
operation.unknown          OperationStatusChanged   (status "unknown")
operation.conflict         OperationStatusChanged   (a contradicting outcome, for review)
operation.mismatch         OperationStatusChanged   (a report that disagrees, for review)
webhook.received           ProviderWebhookReceived
webhook.rejected           ProviderWebhookReceived
circuit_breaker.<state>    CircuitBreakerStateChanged
"""

from __future__ import annotations

from typing import Any

from common.events import GATEWAY_STREAM, OutgoingEvent, make_envelope
from common.grpc.convert import money_to_proto
from gateway_service.domain import events
from paysuite.events.v1 import events_pb2

PRODUCER = "gateway-service"
CONFLICT_EVENT_TYPE = "operation.conflict"
UNKNOWN_EVENT_TYPE = "operation.unknown"
MISMATCH_EVENT_TYPE = "operation.mismatch"


def event_type(event: events.OperationFact) -> str:
    match event:
        case events.OperationStatusChanged():
            return f"{event.kind}.{event.status}"
        case events.ContradictingOutcomeReceived():
            return CONFLICT_EVENT_TYPE
        case events.OperationOutcomeUnknown():
            return UNKNOWN_EVENT_TYPE
        case events.ProviderReportMismatched():
            return MISMATCH_EVENT_TYPE
        case _:
            raise TypeError(f"no event type for {type(event).__name__}")


def to_outgoing(event: Any) -> OutgoingEvent:
    match event:
        case events.OperationFact():
            envelope = _operation_envelope(event)
        case events.WebhookRecorded() | events.WebhookRejected():
            envelope = _webhook_envelope(event)
        case events.CircuitBreakerStateChanged():
            envelope = _breaker_envelope(event)
        case _:
            raise TypeError(f"no mapping for {type(event).__name__}")
    return OutgoingEvent(GATEWAY_STREAM, envelope)


def _operation_envelope(event: events.OperationFact) -> Any:
    status = "unknown" if isinstance(event, events.OperationOutcomeUnknown) else event.status
    return make_envelope(
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
            status=status,
            amount=money_to_proto(event.amount),
            reference=event.reference,
            idempotency_key=event.idempotency_key,
            provider=event.provider,
            provider_reference=event.provider_reference,
            failure_reason=event.failure_reason,
        ),
    )


def _webhook_envelope(event: events.WebhookRecorded | events.WebhookRejected) -> Any:
    received = isinstance(event, events.WebhookRecorded)
    return make_envelope(
        event_type="webhook.received" if received else "webhook.rejected",
        aggregate_type="provider_event",
        aggregate_id=f"{event.provider}:{event.provider_event_id or event.operation_id}",
        aggregate_version=1,
        producer=PRODUCER,
        correlation_id=event.operation_id,
        payload=events_pb2.ProviderWebhookReceived(
            provider=event.provider,
            provider_event_id=event.provider_event_id,
            event_type=event.event_type,
            operation_id=event.operation_id,
            outcome=event.outcome,
        ),
    )


def _breaker_envelope(event: events.CircuitBreakerStateChanged) -> Any:
    return make_envelope(
        event_type=f"circuit_breaker.{event.to_state}",
        aggregate_type="provider",
        aggregate_id=event.provider,
        # Per process: every gateway replica has its own breakers (dedup is by event_id).
        aggregate_version=event.sequence,
        producer=PRODUCER,
        payload=events_pb2.CircuitBreakerStateChanged(
            provider=event.provider,
            from_state=event.from_state,
            to_state=event.to_state,
            calls=event.calls,
            failures=event.failures,
            slow_calls=event.slow_calls,
        ),
    )

"""Payment domain events -> protobuf envelopes: on paysuite.payment.saga when the saga acts on
them (`triggers_saga`), on paysuite.payment.events otherwise. Each event is on one of the two;
a reader of every payment event reads both and orders by `aggregate_version`."""

from __future__ import annotations

from typing import Any

from common.events import PAYMENT_SAGA_STREAM, PAYMENT_STREAM, OutgoingEvent, make_envelope
from common.grpc.convert import money_to_proto
from payment_service.domain import events
from payment_service.service_layer.saga import triggers_saga
from paysuite.events.v1 import events_pb2

PRODUCER = "payment-service"


def to_outgoing(event: Any) -> OutgoingEvent:
    if isinstance(event, events.ReviewRequested):
        return _review_requested(event)
    if isinstance(event, events.PaymentStepRecorded):
        return _step_recorded(event)
    if not isinstance(event, events.PaymentStatusChanged):
        raise TypeError(f"no mapping for {type(event).__name__}")
    envelope = make_envelope(
        event_type=f"payment.{event.to_status}",
        aggregate_type="payment",
        aggregate_id=event.payment_id,
        aggregate_version=event.version,
        producer=PRODUCER,
        payload=events_pb2.PaymentStatusChanged(
            payment_id=event.payment_id,
            kind=event.kind,
            from_status=event.from_status,
            to_status=event.to_status,
            amount=money_to_proto(event.amount),
            source_account_id=event.source_account_id,
            destination_account_id=event.destination_account_id,
            failure_reason=event.failure_reason,
            payment_method=event.payment_method,
            parent_payment_id=event.parent_payment_id,
            provider_call=event.provider_call,
        ),
    )
    return _routed(envelope, event.kind)


def _routed(envelope: events_pb2.EventEnvelope, kind: str) -> OutgoingEvent:
    stream = PAYMENT_SAGA_STREAM if triggers_saga(envelope.event_type, kind) else PAYMENT_STREAM
    return OutgoingEvent(stream, envelope)


def _review_requested(event: events.ReviewRequested) -> OutgoingEvent:
    envelope = make_envelope(
        event_type="payment.review_requested",
        aggregate_type="payment",
        aggregate_id=event.payment_id,
        aggregate_version=event.version,
        producer=PRODUCER,
        payload=events_pb2.PaymentReviewRequested(
            payment_id=event.payment_id,
            status=event.status,
            provider_event=event.provider_event,
            reason=event.reason,
            gateway_operation_id=event.gateway_operation_id,
        ),
    )
    return OutgoingEvent(PAYMENT_STREAM, envelope)


def _step_recorded(event: events.PaymentStepRecorded) -> OutgoingEvent:
    envelope = make_envelope(
        event_type=f"payment.{event.step}",
        aggregate_type="payment",
        aggregate_id=event.payment_id,
        aggregate_version=event.version,
        producer=PRODUCER,
        payload=events_pb2.PaymentStepRecorded(
            payment_id=event.payment_id, kind=event.kind, step=event.step
        ),
    )
    return _routed(envelope, event.kind)

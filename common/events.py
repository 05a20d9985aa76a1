"""Event envelopes: how every fact leaves a service, and how consumers read it back."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import message as pb_message

from common import tracing
from common.ids import new_id
from paysuite.events.v1 import events_pb2

PAYMENT_STREAM = "paysuite.payment.events"
WALLET_STREAM = "paysuite.wallet.events"
GATEWAY_STREAM = "paysuite.gateway.events"


def dead_letter_stream(stream: str) -> str:
    return f"{stream}.dlq"


@dataclass(frozen=True, slots=True)
class OutgoingEvent:
    stream: str
    envelope: events_pb2.EventEnvelope


def make_envelope(
    *,
    event_type: str,
    aggregate_type: str,
    aggregate_id: str,
    aggregate_version: int,
    payload: pb_message.Message,
    producer: str,
    correlation_id: str = "",
    causation_id: str = "",
) -> events_pb2.EventEnvelope:
    envelope = events_pb2.EventEnvelope(
        event_id=new_id(),
        event_type=event_type,
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        aggregate_version=aggregate_version,
        correlation_id=correlation_id or aggregate_id,
        causation_id=causation_id,
        producer=producer,
    )
    envelope.occurred_at.GetCurrentTime()
    envelope.payload.Pack(payload)
    tracing.stamp(envelope)
    return envelope

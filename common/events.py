"""Event envelopes: how every fact leaves a service, and how consumers read it back."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from google.protobuf import message as pb_message

from common import tracing
from common.ids import new_id
from paysuite.events.v1 import events_pb2

PAYMENT_STREAM = "paysuite.payment.events"
# The payment events the payment service's own saga acts on, and only those
# (payment_service/service_layer/saga.py:triggers_saga): on the public stream its consumer
# group was delivered every payment event and acknowledged two of three unread.
PAYMENT_SAGA_STREAM = "paysuite.payment.saga"
WALLET_STREAM = "paysuite.wallet.events"
GATEWAY_STREAM = "paysuite.gateway.events"
# Every stream of the suite, by the short name the CLI takes for it: what the recovery
# worker's stall sweep, `paysuite events`, the soak and the chaos observer look at.
SUITE_STREAMS = {
    "payment": PAYMENT_STREAM,
    "saga": PAYMENT_SAGA_STREAM,
    "wallet": WALLET_STREAM,
    "gateway": GATEWAY_STREAM,
}


def suite_stream_keys(prefix: str) -> list[str]:
    """The suite's streams as Redis keys under a deployment's `stream_prefix`."""
    return [prefix + stream for stream in SUITE_STREAMS.values()]


def dead_letter_stream(stream: str) -> str:
    return f"{stream}.dlq"


def event_type_patterns(value: str) -> tuple[str, ...]:
    """A setting's comma-separated event-type patterns ("account.*, account.frozen"): shell
    patterns (`*`, `?`) over the dotted lowercase names the envelopes carry."""
    patterns = tuple(p.strip() for p in value.split(",") if p.strip())
    for pattern in patterns:
        if not re.fullmatch(r"[a-z0-9_.*?]+", pattern):
            raise ValueError(f"{pattern!r} is not an event-type pattern (like account.* )")
    return patterns


def matching(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """Whether an event type matches any of the patterns (none: nothing does)."""
    return lambda event_type: any(fnmatchcase(event_type, p) for p in patterns)


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

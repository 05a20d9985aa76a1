"""Wallet account events -> protobuf envelopes on paysuite.wallet.events (one per event)."""

from __future__ import annotations

import json
import re
from typing import Any

from common.events import WALLET_STREAM, OutgoingEvent, make_envelope
from common.grpc.convert import money_to_proto
from common.money import Money
from paysuite.events.v1 import events_pb2
from wallet_service.domain import events
from wallet_service.domain.account import Published

PRODUCER = "wallet-service"


def event_type_name(event_type: str) -> str:
    """ "HoldPlaced" -> "account.hold_placed"."""
    return "account." + re.sub(r"(?<!^)(?=[A-Z])", "_", event_type).lower().removeprefix("account_")


def to_outgoing(item: Any) -> OutgoingEvent:
    if not isinstance(item, Published):
        raise TypeError(f"no mapping for {type(item).__name__}")
    recorded = item.recorded
    payload: Any
    match recorded.event:
        case events.AccountOpened():
            payload = events_pb2.AccountOpened(
                account_id=recorded.account_id,
                owner_id=recorded.event.owner_id,
                currency=recorded.event.currency,
            )
        case _:
            payload = events_pb2.AccountEventRecorded(
                account_id=recorded.account_id,
                version=recorded.version,
                event_type=recorded.event_type,
                payload_json=json.dumps(
                    events.payload_of(recorded.event), sort_keys=True, separators=(",", ":")
                ),
                prev_hash=recorded.prev_hash,
                hash=recorded.hash,
                total=money_to_proto(Money(item.total_minor, item.currency)),
                held=money_to_proto(Money(item.held_minor, item.currency)),
                available=money_to_proto(Money(item.total_minor - item.held_minor, item.currency)),
            )
    envelope = make_envelope(
        event_type=event_type_name(recorded.event_type),
        aggregate_type="account",
        aggregate_id=recorded.account_id,
        aggregate_version=recorded.version,
        producer=PRODUCER,
        causation_id=getattr(recorded.event, "operation_ref", ""),
        payload=payload,
    )
    return OutgoingEvent(WALLET_STREAM, envelope)

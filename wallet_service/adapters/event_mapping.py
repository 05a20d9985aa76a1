"""Wallet account events -> protobuf envelopes on paysuite.wallet.events (one per event), for
the event types the wallet publishes.

No process of the suite reads the wallet's stream: an account's history is its hash-chained
event store (ListEntries, the recovery worker's reconciliation read it over gRPC). So the wallet
publishes only the types an operator subscribes to (PAYSUITE_WALLET_PUBLISHED_EVENTS, as a
Stripe webhook endpoint lists its enabled events), and by default none. Measured: the credit's
outbox row, relay claim and XADD were one of the five events of every deposit.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from typing import Any

from common.config import ConfigError
from common.events import WALLET_STREAM, OutgoingEvent, make_envelope, matching
from common.grpc.convert import money_to_proto
from common.money import Money
from paysuite.events.v1 import events_pb2
from wallet_service.domain import events
from wallet_service.domain.account import Published

PRODUCER = "wallet-service"


@functools.cache  # a dozen event types, each mapped on every event
def event_type_name(event_type: str) -> str:
    """ "HoldPlaced" -> "account.hold_placed"."""
    return "account." + re.sub(r"(?<!^)(?=[A-Z])", "_", event_type).lower().removeprefix("account_")


def publisher(patterns: tuple[str, ...]) -> Callable[[Any], OutgoingEvent | None]:
    """The unit of work's mapper: the envelope of an event of a published type, else None.
    A pattern that names no wallet event type is a typo, refused at start-up."""
    names = {event_type_name(t): t for t in events.EVENT_TYPES}
    for pattern in patterns:
        if not any(matching((pattern,))(name) for name in names):
            known = ", ".join(sorted(names))
            raise ConfigError(
                f"PAYSUITE_WALLET_PUBLISHED_EVENTS: {pattern!r} matches no wallet event ({known})"
            )
    published = frozenset(t for name, t in names.items() if matching(patterns)(name))

    def mapped(item: Any) -> OutgoingEvent | None:
        if isinstance(item, Published) and item.recorded.event_type not in published:
            return None
        return to_outgoing(item)

    return mapped


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

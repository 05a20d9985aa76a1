"""Wallet domain events -> protobuf envelopes on paysuite.wallet.events."""

from __future__ import annotations

from typing import Any

from common.events import WALLET_STREAM, OutgoingEvent, make_envelope
from common.grpc.convert import money_to_proto
from paysuite.events.v1 import events_pb2
from wallet_service.domain import events

PRODUCER = "wallet-service"


def to_outgoing(event: Any) -> OutgoingEvent:
    match event:
        case events.AccountOpened():
            envelope = make_envelope(
                event_type="account.opened",
                aggregate_type="account",
                aggregate_id=event.account_id,
                aggregate_version=event.version,
                producer=PRODUCER,
                payload=events_pb2.AccountOpened(
                    account_id=event.account_id, owner_id=event.owner_id, currency=event.currency
                ),
            )
        case events.LedgerTransactionRecorded():
            envelope = make_envelope(
                event_type=f"account.{event.kind}ed",
                aggregate_type="account",
                aggregate_id=event.account_id,
                aggregate_version=event.version,
                producer=PRODUCER,
                causation_id=event.operation_ref,
                payload=events_pb2.LedgerTransactionRecorded(
                    transaction_id=event.transaction_id,
                    operation_ref=event.operation_ref,
                    kind=event.kind,
                    account_id=event.account_id,
                    amount=money_to_proto(event.amount),
                    balance_after=money_to_proto(event.balance_after),
                ),
            )
        case _:
            raise TypeError(f"no mapping for {type(event).__name__}")
    return OutgoingEvent(WALLET_STREAM, envelope)

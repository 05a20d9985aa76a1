"""Consumes the payment service's own stream to run the saga's next step asynchronously.

CreateDeposit only commits the payment (with its `payment.initiated` outbox row); this
consumer, in its own group, turns that durable fact into the gateway charge. A crash at any
point leaves the event pending, and the step is retried with the same idempotency key.
"""

from __future__ import annotations

from common.grpc.convert import money_from_proto
from payment_service.domain.model import ChargeInstruction
from payment_service.service_layer.services import PaymentService
from paysuite.events.v1 import events_pb2

GROUP = "payment-saga"


class PaymentSagaEntrypoint:
    def __init__(self, service: PaymentService) -> None:
        self._service = service

    async def __call__(self, envelope: events_pb2.EventEnvelope) -> None:
        if envelope.event_type != "payment.initiated":
            return
        change = events_pb2.PaymentStatusChanged()
        if not envelope.payload.Unpack(change):
            raise ValueError(f"{envelope.event_type} without a PaymentStatusChanged payload")
        if change.kind == "deposit":
            await self._service.charge_deposit(
                ChargeInstruction.for_deposit(
                    change.payment_id, money_from_proto(change.amount), change.payment_method
                )
            )

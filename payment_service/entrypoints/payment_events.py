"""Consumes the payment service's saga stream to run the saga's next step asynchronously.

CreateDeposit only commits the payment (with its `payment.initiated` outbox row); this
consumer, in its own group, turns that durable fact into the gateway charge. Likewise a
withdrawal's or refund's `payment.funds_held` into the payout or refund, a deposit's
`payment.refunding` into its compensation refund, and `payment.cancelled` into releasing the
hold. A crash at any point leaves the event pending, and the step is retried with the same
idempotency key.
"""

from __future__ import annotations

from common.grpc.convert import money_from_proto
from payment_service.service_layer.saga import TRIGGERS, Saga
from paysuite.events.v1 import events_pb2

GROUP = "payment-saga"


class PaymentSagaEntrypoint:
    def __init__(self, saga: Saga) -> None:
        self._saga = saga

    @staticmethod
    def handles(event_type: str) -> bool:
        """Its stream carries only triggers (`triggers_saga`); anything else found there is
        acknowledged unread."""
        return event_type in TRIGGERS

    async def __call__(self, envelope: events_pb2.EventEnvelope) -> None:
        payment_id = envelope.aggregate_id
        match envelope.event_type:
            case "payment.initiated":
                # Withdrawals, transfers and refunds take their first step on the request
                # path (the resume sweep covers a crash there); a deposit's is the charge.
                change = events_pb2.PaymentStatusChanged()
                if not envelope.payload.Unpack(change):
                    raise ValueError(f"{envelope.event_type} without a PaymentStatusChanged")
                if change.kind == "deposit" and change.provider_call == "charge":
                    await self._saga.charge_deposit(
                        payment_id, money_from_proto(change.amount), change.payment_method
                    )
                elif change.kind == "deposit":  # created before the create recorded it
                    await self._saga.ask_provider(payment_id)
            case "payment.funds_held":
                await self._saga.ask_provider(payment_id)
            case "payment.refunding" | "payment.compensation_retry":
                await self._saga.compensate(payment_id)
            case "payment.cancelled":
                await self._saga.release_hold(payment_id)

"""Consumes paysuite.gateway.events and hands each charge outcome to the service layer."""

from __future__ import annotations

import structlog

from payment_service.service_layer.handlers import GatewayEventHandlers
from paysuite.events.v1 import events_pb2

log = structlog.get_logger(__name__)

GROUP = "payment-service"
# The gateway's facts for review: a provider contradicting an operation that had ended, or
# reporting it for another amount or reference. Either means money may have moved otherwise
# than the payment says, so the payment gets a case (it is never moved by them).
DISPUTES = ("operation.conflict", "operation.mismatch")


class GatewayEventsEntrypoint:
    def __init__(self, handlers: GatewayEventHandlers) -> None:
        self._handlers = handlers

    @staticmethod
    def handles(event_type: str) -> bool:
        """The outcomes and disputes it acts on; the group acknowledges the rest unread."""
        operation, _, outcome = event_type.partition(".")
        return event_type in DISPUTES or (
            operation in ("charge", "payout", "refund") and outcome in ("succeeded", "failed")
        )

    async def __call__(self, envelope: events_pb2.EventEnvelope) -> None:
        operation = envelope.event_type.partition(".")[0]
        if envelope.event_type in DISPUTES:
            await self._disputed(envelope)
            return
        if not self.handles(envelope.event_type):
            return
        change = events_pb2.OperationStatusChanged()
        if not envelope.payload.Unpack(change):
            raise ValueError(f"{envelope.event_type} without an OperationStatusChanged payload")
        if not change.reference:
            log.warning("gateway_event.without_reference", event_id=envelope.event_id)
            return
        common = {
            "event_id": envelope.event_id,
            "payment_id": change.reference,
            "operation_id": change.operation_id,
        }
        # *.pending is not handled: the saga step that asked the provider records `pending`
        # from the gateway's answer itself, so that event would cost a read and change nothing.
        match envelope.event_type:
            case "charge.succeeded":
                await self._handlers.charge_succeeded(**common)
            case "charge.failed":
                await self._handlers.charge_failed(**common, reason=change.failure_reason)
            case "payout.succeeded" | "refund.succeeded":
                await self._handlers.provider_succeeded(
                    **common, operation=operation, provider=change.provider
                )
            case _:
                await self._handlers.provider_failed(
                    **common, operation=operation, reason=change.failure_reason
                )

    async def _disputed(self, envelope: events_pb2.EventEnvelope) -> None:
        change = events_pb2.OperationStatusChanged()
        if not envelope.payload.Unpack(change):
            raise ValueError(f"{envelope.event_type} without an OperationStatusChanged payload")
        if not change.reference:
            log.warning("gateway_event.without_reference", event_id=envelope.event_id)
            return
        # A conflict carries the outcome the provider now reports (e.g. charge.succeeded).
        said = f"{change.kind}.{change.status}"
        await self._handlers.provider_disputed(
            event_id=envelope.event_id,
            payment_id=change.reference,
            provider_event=said
            if envelope.event_type.endswith("conflict")
            else envelope.event_type,
            reason=change.failure_reason,
        )

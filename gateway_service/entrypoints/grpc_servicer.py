"""GatewayService over gRPC: converts messages, calls the service layer, converts back.

No try/except here: domain errors become statuses in common.grpc.errors. Every call that asks
a provider passes the caller's deadline down, so no provider request outlives its caller.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from common import tracing
from common.auth import Access
from common.errors import ValidationError
from common.grpc.auth import Policy
from common.grpc.convert import money_from_request, money_to_proto, timestamp
from common.grpc.errors import serve_items, status_for
from common.money import Money
from gateway_service.domain.model import (
    HistoryEntry,
    Operation,
    OperationKind,
    OperationStatus,
    ProviderEvent,
)
from gateway_service.service_layer.gateway import GatewayService
from gateway_service.service_layer.inbox import ProviderEventReceipt
from paysuite.gateway.v1 import gateway_pb2, gateway_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]

SERVICE_NAME = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name

# Who may call what (common.auth): the provider-facing RPCs are our services' (the payment
# service, the webhook adapter, the recovery worker); operators may look.
POLICY = Policy(
    SERVICE_NAME,
    {
        "Charge": Access.SERVICE,
        "Charges": Access.SERVICE,
        "Payout": Access.SERVICE,
        "Payouts": Access.SERVICE,
        "Refund": Access.SERVICE,
        "SyncOperation": Access.SERVICE,
        "HandleProviderEvent": Access.SERVICE,
        "HandleProviderEvents": Access.SERVICE,
        "GetOperation": Access.OPERATOR,
        "GetProviderStatus": Access.OPERATOR,
    },
)

# Each item of a Charges (Payouts) batch is served as a Charge (Payout) of its own would be
# (span, logs), all of a batch together so that GroupedWrites records them in one group
# commit (common.grpc.errors.serve_items).
CHARGE_METHOD = f"/{SERVICE_NAME}/Charge"
PAYOUT_METHOD = f"/{SERVICE_NAME}/Payout"

# Kept from the caller's deadline for recording the provider's answer.
_MARGIN_S = 0.1

KIND_TO_PROTO = {
    OperationKind.CHARGE: gateway_pb2.OPERATION_KIND_CHARGE,
    OperationKind.PAYOUT: gateway_pb2.OPERATION_KIND_PAYOUT,
    OperationKind.REFUND: gateway_pb2.OPERATION_KIND_REFUND,
}
STATUS_TO_PROTO = {
    OperationStatus.CREATED: gateway_pb2.OPERATION_STATUS_CREATED,
    OperationStatus.PENDING: gateway_pb2.OPERATION_STATUS_PENDING,
    OperationStatus.SUCCEEDED: gateway_pb2.OPERATION_STATUS_SUCCEEDED,
    OperationStatus.FAILED: gateway_pb2.OPERATION_STATUS_FAILED,
}


def _history_to_proto(entry: HistoryEntry) -> gateway_pb2.OperationHistoryEntry:
    return gateway_pb2.OperationHistoryEntry(
        status=STATUS_TO_PROTO[entry.status],
        provider=entry.provider,
        provider_reference=entry.provider_reference,
        failure_reason=entry.failure_reason,
        outcome_unknown=entry.outcome_unknown,
        recorded_at=timestamp(entry.recorded_at),
    )


def operation_to_proto(operation: Operation) -> gateway_pb2.Operation:
    return gateway_pb2.Operation(
        operation_id=operation.operation_id,
        kind=KIND_TO_PROTO[operation.kind],
        status=STATUS_TO_PROTO[operation.status],
        amount=money_to_proto(operation.amount),
        idempotency_key=operation.idempotency_key,
        provider=operation.provider,
        provider_reference=operation.provider_reference or "",
        failure_reason=operation.failure_reason or "",
        reference=operation.reference,
        created_at=timestamp(operation.created_at),
        updated_at=timestamp(operation.updated_at),
        outcome_unknown=operation.outcome_unknown,
        parent_operation_id=operation.parent_operation_id or "",
        history=[_history_to_proto(entry) for entry in operation.history],
    )


def _deadline(context: Context) -> float | None:
    """An absolute time.monotonic() deadline from the caller's remaining time, less a margin
    for recording the answer."""
    seconds_left = context.time_remaining()
    if seconds_left is None:
        return None
    return time.monotonic() + max(0.0, seconds_left - _MARGIN_S)


def _amount(message: Any, field: str = "amount") -> Money:
    return money_from_request(getattr(message, field), field=field, present=message.HasField(field))


def _wall_time(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.fromtimestamp(seconds, UTC))
    return stamp


def _provider_event(request: gateway_pb2.HandleProviderEventRequest) -> ProviderEvent:
    return ProviderEvent(
        provider=request.provider,
        provider_event_id=request.provider_event_id,
        event_type=request.event_type,
        provider_reference=request.provider_reference,
        failure_reason=request.failure_reason,
        occurred_at=(
            request.occurred_at.ToDatetime(tzinfo=UTC) if request.HasField("occurred_at") else None
        ),
        raw_payload=request.raw_payload,
        operation_id=request.operation_id,
        amount=_amount(request) if request.HasField("amount") else None,
        trace_context=_trace_context(request),
    )


def _trace_context(request: gateway_pb2.HandleProviderEventRequest) -> tuple[tuple[str, str], ...]:
    """The webhook's own trace context when the adapter sent one (a batch holds many flows);
    else the call's, which the metadata carried."""
    if request.traceparent:
        carrier = {"traceparent": request.traceparent, "tracestate": request.tracestate}
    else:
        carrier = dict(tracing.inject({}))
    return tuple((key, value) for key, value in carrier.items() if value)


def _provider_event_or_error(
    request: gateway_pb2.HandleProviderEventRequest,
) -> ProviderEvent | ValidationError:
    # The one try in this module: in a batch, an event whose amount does not convert must get
    # its own INVALID_ARGUMENT result, not fail the events that came with it.
    try:
        return _provider_event(request)
    except ValidationError as exc:
        return exc


def _receipt_to_proto(receipt: ProviderEventReceipt) -> gateway_pb2.HandleProviderEventResponse:
    return gateway_pb2.HandleProviderEventResponse(
        first_delivery=receipt.first_delivery,
        operation_id=receipt.operation_id or "",
        outcome=receipt.status.value if receipt.status is not None else "",
    )


def _result_to_proto(
    outcome: ProviderEventReceipt | ValidationError,
) -> gateway_pb2.HandleProviderEventResult:
    if isinstance(outcome, ValidationError):
        return gateway_pb2.HandleProviderEventResult(
            code=status_for(outcome).value[0], message=outcome.message
        )
    return gateway_pb2.HandleProviderEventResult(response=_receipt_to_proto(outcome))


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, service: GatewayService) -> None:
        self._service = service

    async def Charge(
        self, request: gateway_pb2.ChargeRequest, context: Context
    ) -> gateway_pb2.Operation:
        return operation_to_proto(await self._charge(request, _deadline(context)))

    async def _charge(
        self, request: gateway_pb2.ChargeRequest, deadline: float | None
    ) -> Operation:
        """A charge, alone (Charge) or one of a batch (Charges): the same checks and call."""
        return await self._service.operations.charge(
            idempotency_key=request.idempotency_key,
            amount=_amount(request),
            payment_method=request.payment_method,
            reference=request.reference,
            deadline=deadline,
        )

    async def Charges(
        self, request: gateway_pb2.ChargesRequest, context: Context
    ) -> gateway_pb2.ChargesResponse:
        deadline = _deadline(context)
        results = await serve_items(
            CHARGE_METHOD,
            request.charges,
            lambda item: self._charge(item, deadline),
            operation_to_proto,
        )
        return gateway_pb2.ChargesResponse(
            results=[gateway_pb2.ChargeResult(status=s, operation=o) for s, o in results]
        )

    async def Payout(
        self, request: gateway_pb2.PayoutRequest, context: Context
    ) -> gateway_pb2.Operation:
        return operation_to_proto(await self._payout(request, _deadline(context)))

    async def _payout(
        self, request: gateway_pb2.PayoutRequest, deadline: float | None
    ) -> Operation:
        """A payout, alone (Payout) or one of a batch (Payouts): the same checks and call."""
        return await self._service.operations.payout(
            idempotency_key=request.idempotency_key,
            amount=_amount(request),
            destination=request.destination,
            reference=request.reference,
            deadline=deadline,
        )

    async def Payouts(
        self, request: gateway_pb2.PayoutsRequest, context: Context
    ) -> gateway_pb2.PayoutsResponse:
        deadline = _deadline(context)
        results = await serve_items(
            PAYOUT_METHOD,
            request.payouts,
            lambda item: self._payout(item, deadline),
            operation_to_proto,
        )
        return gateway_pb2.PayoutsResponse(
            results=[gateway_pb2.PayoutResult(status=s, operation=o) for s, o in results]
        )

    async def Refund(
        self, request: gateway_pb2.RefundRequest, context: Context
    ) -> gateway_pb2.Operation:
        operation = await self._service.operations.refund(
            idempotency_key=request.idempotency_key,
            charge_operation_id=request.charge_operation_id,
            amount=_amount(request),
            reference=request.reference,
            deadline=_deadline(context),
        )
        return operation_to_proto(operation)

    async def GetOperation(
        self, request: gateway_pb2.GetOperationRequest, context: Context
    ) -> gateway_pb2.Operation:
        return operation_to_proto(
            await self._service.operations.get_operation(request.operation_id)
        )

    async def SyncOperation(
        self, request: gateway_pb2.SyncOperationRequest, context: Context
    ) -> gateway_pb2.Operation:
        operation = await self._service.sync.sync_operation(
            request.operation_id, trigger=request.trigger, deadline=_deadline(context)
        )
        return operation_to_proto(operation)

    async def HandleProviderEvent(
        self, request: gateway_pb2.HandleProviderEventRequest, context: Context
    ) -> gateway_pb2.HandleProviderEventResponse:
        event = _provider_event(request)
        receipt = await self._service.inbox.handle_provider_event(
            provider=event.provider,
            provider_event_id=event.provider_event_id,
            event_type=event.event_type,
            provider_reference=event.provider_reference,
            failure_reason=event.failure_reason,
            occurred_at=event.occurred_at,
            raw_payload=event.raw_payload,
            operation_id=event.operation_id,
            amount=event.amount,
        )
        return _receipt_to_proto(receipt)

    async def HandleProviderEvents(
        self, request: gateway_pb2.HandleProviderEventsRequest, context: Context
    ) -> gateway_pb2.HandleProviderEventsResponse:
        outcomes = await self._service.inbox.handle_provider_events(
            [_provider_event_or_error(item) for item in request.events]
        )
        return gateway_pb2.HandleProviderEventsResponse(
            results=[_result_to_proto(outcome) for outcome in outcomes]
        )

    async def GetProviderStatus(
        self, request: gateway_pb2.GetProviderStatusRequest, context: Context
    ) -> gateway_pb2.GetProviderStatusResponse:
        return gateway_pb2.GetProviderStatusResponse(
            providers=[
                gateway_pb2.ProviderStatus(
                    provider=snapshot.name,
                    breaker_state=snapshot.state.value,
                    calls=snapshot.calls,
                    failures=snapshot.failures,
                    slow_calls=snapshot.slow_calls,
                    rejected_calls=snapshot.rejected_calls,
                    state_since=_wall_time(snapshot.state_since),
                    priority=priority,
                )
                for priority, snapshot in self._service.breakers.provider_status()
            ]
        )

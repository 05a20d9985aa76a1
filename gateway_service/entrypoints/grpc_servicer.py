"""GatewayService over gRPC: converts messages, calls the service layer, converts back.

No try/except here: domain errors become statuses in common.grpc.errors.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import grpc

from common.grpc.convert import money_from_request, money_to_proto, timestamp
from gateway_service.domain.model import Operation, OperationKind, OperationStatus
from gateway_service.service_layer.services import GatewayService
from paysuite.gateway.v1 import gateway_pb2, gateway_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]

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
    )


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, service: GatewayService) -> None:
        self._service = service

    async def Charge(
        self, request: gateway_pb2.ChargeRequest, context: Context
    ) -> gateway_pb2.Operation:
        operation = await self._service.charge(
            idempotency_key=request.idempotency_key,
            amount=money_from_request(
                request.amount, field="amount", present=request.HasField("amount")
            ),
            payment_method=request.payment_method,
            reference=request.reference,
        )
        return operation_to_proto(operation)

    async def GetOperation(
        self, request: gateway_pb2.GetOperationRequest, context: Context
    ) -> gateway_pb2.Operation:
        return operation_to_proto(await self._service.get_operation(request.operation_id))

    async def HandleProviderEvent(
        self, request: gateway_pb2.HandleProviderEventRequest, context: Context
    ) -> gateway_pb2.HandleProviderEventResponse:
        receipt = await self._service.handle_provider_event(
            provider=request.provider,
            provider_event_id=request.provider_event_id,
            event_type=request.event_type,
            provider_reference=request.provider_reference,
            failure_reason=request.failure_reason,
            occurred_at=(
                request.occurred_at.ToDatetime(tzinfo=UTC)
                if request.HasField("occurred_at")
                else None
            ),
            raw_payload=request.raw_payload,
        )
        return gateway_pb2.HandleProviderEventResponse(
            first_delivery=receipt.first_delivery, operation_id=receipt.operation_id or ""
        )

    async def Payout(self, request: Any, context: Context) -> Any:
        raise NotImplementedError("GatewayService.Payout is not implemented yet")

    async def Refund(self, request: Any, context: Context) -> Any:
        raise NotImplementedError("GatewayService.Refund is not implemented yet")

    async def SyncOperation(self, request: Any, context: Context) -> Any:
        raise NotImplementedError("GatewayService.SyncOperation is not implemented yet")

    async def GetProviderStatus(self, request: Any, context: Context) -> Any:
        raise NotImplementedError("GatewayService.GetProviderStatus is not implemented yet")

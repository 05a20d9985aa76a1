"""The services, through their gRPC APIs: the worker's only way to change anything.

A gRPC error becomes our domain error here, once (`translate_rpc_error`): UNAVAILABLE and
other transient codes are DependencyUnavailable, which the sweeps treat as "next round".
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import NoReturn

import grpc

from common.grpc.client import translate_rpc_error
from paysuite.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from paysuite.payment.v1 import payment_pb2, payment_pb2_grpc
from paysuite.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from recovery_worker.domain.model import PaymentStatus, PaymentView, SyncAnswer

PAGE_SIZE = 100

_STATUS = {
    PaymentStatus.INITIATED: payment_pb2.PAYMENT_STATUS_INITIATED,
    PaymentStatus.PENDING: payment_pb2.PAYMENT_STATUS_PENDING,
    PaymentStatus.REFUNDING: payment_pb2.PAYMENT_STATUS_REFUNDING,
}
_SETTLED = frozenset({gateway_pb2.OPERATION_STATUS_SUCCEEDED, gateway_pb2.OPERATION_STATUS_FAILED})


def _raise(exc: grpc.aio.AioRpcError, service: str) -> NoReturn:
    raise translate_rpc_error(exc, service=service) from exc


def _view(payment: payment_pb2.Payment) -> PaymentView:
    return PaymentView(
        payment_id=payment.payment_id,
        kind=payment_pb2.PaymentKind.Name(payment.kind).removeprefix("PAYMENT_KIND_").lower(),
        status=payment_pb2.PaymentStatus.Name(payment.status)
        .removeprefix("PAYMENT_STATUS_")
        .lower(),
        created_at=payment.created_at.ToDatetime(UTC),
        updated_at=payment.updated_at.ToDatetime(UTC),
        gateway_operation_id=payment.gateway_operation_id,
    )


class GrpcPayments:
    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float) -> None:
        self._stub = payment_pb2_grpc.PaymentServiceStub(channel)
        self._timeout_s = timeout_s

    async def stuck(
        self, status: PaymentStatus, *, created_before: datetime
    ) -> AsyncIterator[PaymentView]:
        token = ""
        while True:
            request = payment_pb2.ListPaymentsRequest(
                status=_STATUS[status], page_size=PAGE_SIZE, page_token=token
            )
            request.created_before.FromDatetime(created_before)
            try:
                page = await self._stub.ListPayments(request, timeout=self._timeout_s)
            except grpc.aio.AioRpcError as exc:
                _raise(exc, "payment service")
            for payment in page.payments:
                yield _view(payment)
            # The token is a position in creation order, so payments this sweep moves on
            # meanwhile never make a page skip or repeat one.
            token = page.next_page_token
            if not token:
                return


class GrpcGateway:
    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float) -> None:
        self._stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        self._timeout_s = timeout_s

    async def sync_operation(self, operation_id: str) -> SyncAnswer:
        # trigger "" is the contract's value for an operator or the recovery worker; the
        # gateway refuses any other name than "unverified_webhook".
        request = gateway_pb2.SyncOperationRequest(operation_id=operation_id, trigger="")
        try:
            operation = await self._stub.SyncOperation(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            _raise(exc, "gateway service")
        return SyncAnswer.SETTLED if operation.status in _SETTLED else SyncAnswer.UNKNOWN


class GrpcWallet:
    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float) -> None:
        self._stub = wallet_pb2_grpc.WalletServiceStub(channel)
        self._timeout_s = timeout_s

    async def expire_holds(self, *, limit: int) -> Sequence[str]:
        request = wallet_pb2.ExpireHoldsRequest(limit=limit)
        try:
            response = await self._stub.ExpireHolds(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            _raise(exc, "wallet service")
        return list(response.expired_hold_ids)

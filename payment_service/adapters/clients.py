"""gRPC clients for the wallet and gateway services, behind the service layer's ports."""

from __future__ import annotations

import grpc

from common.grpc.client import translate_rpc_error
from common.grpc.convert import money_to_proto
from common.money import Money
from payment_service.domain.model import ChargeAnswer
from payment_service.service_layer.ports import AccountInfo, ChargeResult
from paysuite.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from paysuite.wallet.v1 import wallet_pb2, wallet_pb2_grpc

# Any status not listed (CREATED, or one a newer gateway adds) means the outcome is unknown:
# the saga asks again with the same key rather than guess.
_CHARGE_ANSWER = {
    gateway_pb2.OPERATION_STATUS_PENDING: ChargeAnswer.ACCEPTED,
    gateway_pb2.OPERATION_STATUS_SUCCEEDED: ChargeAnswer.ACCEPTED,
    gateway_pb2.OPERATION_STATUS_FAILED: ChargeAnswer.DECLINED,
}


class WalletClient:
    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float) -> None:
        self._stub = wallet_pb2_grpc.WalletServiceStub(channel)
        self._timeout = timeout_s

    async def get_account(self, account_id: str) -> AccountInfo:
        try:
            account = await self._stub.GetAccount(
                wallet_pb2.GetAccountRequest(account_id=account_id), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise translate_rpc_error(exc, service="wallet") from exc
        return AccountInfo(account_id=account.account_id, currency=account.currency)

    async def credit(self, *, operation_ref: str, account_id: str, amount: Money) -> None:
        request = wallet_pb2.CreditRequest(
            operation_ref=operation_ref,
            account_id=account_id,
            amount=money_to_proto(amount),
            description="deposit",
        )
        try:
            await self._stub.Credit(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise translate_rpc_error(exc, service="wallet") from exc


class GatewayClient:
    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float) -> None:
        self._stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        self._timeout = timeout_s

    async def charge(
        self, *, idempotency_key: str, amount: Money, payment_method: str, reference: str
    ) -> ChargeResult:
        request = gateway_pb2.ChargeRequest(
            idempotency_key=idempotency_key,
            amount=money_to_proto(amount),
            payment_method=payment_method,
            reference=reference,
        )
        try:
            operation = await self._stub.Charge(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise translate_rpc_error(exc, service="gateway") from exc
        return ChargeResult(
            operation_id=operation.operation_id,
            answer=_CHARGE_ANSWER.get(operation.status, ChargeAnswer.UNKNOWN),
            failure_reason=operation.failure_reason,
        )

"""gRPC clients for the wallet and gateway services, behind the service layer's ports.

Every call's deadline is the configured timeout, or less when the request being served has
less time left (`common.grpc.deadlines`), so a caller's deadline reaches every hop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from common.grpc.client import translate_rpc_error
from common.grpc.convert import money_to_proto
from common.grpc.deadlines import remaining
from common.money import Money
from payment_service.domain.saga import ProviderAnswer
from payment_service.service_layer.ports import AccountInfo, OperationState, ProviderResult
from paysuite.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from paysuite.wallet.v1 import wallet_pb2, wallet_pb2_grpc

T = TypeVar("T")

# Any status not listed (CREATED, or one a newer gateway adds) means the outcome is unknown:
# the saga asks again with the same key rather than guess.
_ANSWER = {
    gateway_pb2.OPERATION_STATUS_PENDING: ProviderAnswer.ACCEPTED,
    gateway_pb2.OPERATION_STATUS_SUCCEEDED: ProviderAnswer.ACCEPTED,
    gateway_pb2.OPERATION_STATUS_FAILED: ProviderAnswer.DECLINED,
}


class _Client:
    service = ""

    def __init__(self, *, timeout_s: float) -> None:
        self._timeout = timeout_s

    async def _call(self, rpc: Callable[..., Awaitable[T]], request: object) -> T:
        try:
            return await rpc(request, timeout=remaining(self._timeout))
        except grpc.aio.AioRpcError as exc:
            raise translate_rpc_error(exc, service=self.service) from exc


class WalletClient(_Client):
    service = "wallet"

    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float) -> None:
        super().__init__(timeout_s=timeout_s)
        self._stub = wallet_pb2_grpc.WalletServiceStub(channel)

    async def get_account(self, account_id: str) -> AccountInfo:
        account = await self._call(
            self._stub.GetAccount, wallet_pb2.GetAccountRequest(account_id=account_id)
        )
        return AccountInfo(
            account_id=account.account_id, currency=account.currency, owner_id=account.owner_id
        )

    async def credit(self, *, operation_ref: str, account_id: str, amount: Money) -> None:
        await self._call(
            self._stub.Credit,
            wallet_pb2.CreditRequest(
                operation_ref=operation_ref,
                account_id=account_id,
                amount=money_to_proto(amount),
                description="deposit",
            ),
        )

    async def place_hold(
        self, *, operation_ref: str, account_id: str, amount: Money, reference: str
    ) -> str:
        hold = await self._call(
            self._stub.PlaceHold,
            wallet_pb2.PlaceHoldRequest(
                operation_ref=operation_ref,
                account_id=account_id,
                amount=money_to_proto(amount),
                reference=reference,
            ),
        )
        return hold.hold_id

    async def capture_hold(self, *, operation_ref: str, hold_id: str, provider: str) -> None:
        await self._call(
            self._stub.CaptureHold,
            wallet_pb2.CaptureHoldRequest(
                operation_ref=operation_ref, hold_id=hold_id, provider=provider
            ),
        )

    async def release_hold(self, *, operation_ref: str, hold_id: str) -> None:
        await self._call(
            self._stub.ReleaseHold,
            wallet_pb2.ReleaseHoldRequest(operation_ref=operation_ref, hold_id=hold_id),
        )

    async def transfer(
        self,
        *,
        operation_ref: str,
        source_account_id: str,
        destination_account_id: str,
        amount: Money,
        reference: str,
    ) -> str:
        transaction = await self._call(
            self._stub.Transfer,
            wallet_pb2.TransferRequest(
                operation_ref=operation_ref,
                source_account_id=source_account_id,
                destination_account_id=destination_account_id,
                amount=money_to_proto(amount),
                reference=reference,
            ),
        )
        return transaction.transaction_id


class GatewayClient(_Client):
    service = "gateway"

    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float) -> None:
        super().__init__(timeout_s=timeout_s)
        self._stub = gateway_pb2_grpc.GatewayServiceStub(channel)

    async def charge(
        self, *, idempotency_key: str, amount: Money, payment_method: str, reference: str
    ) -> ProviderResult:
        return _result(
            await self._call(
                self._stub.Charge,
                gateway_pb2.ChargeRequest(
                    idempotency_key=idempotency_key,
                    amount=money_to_proto(amount),
                    payment_method=payment_method,
                    reference=reference,
                ),
            )
        )

    async def payout(
        self, *, idempotency_key: str, amount: Money, destination: str, reference: str
    ) -> ProviderResult:
        return _result(
            await self._call(
                self._stub.Payout,
                gateway_pb2.PayoutRequest(
                    idempotency_key=idempotency_key,
                    amount=money_to_proto(amount),
                    destination=destination,
                    reference=reference,
                ),
            )
        )

    async def refund(
        self, *, idempotency_key: str, charge_operation_id: str, amount: Money, reference: str
    ) -> ProviderResult:
        return _result(
            await self._call(
                self._stub.Refund,
                gateway_pb2.RefundRequest(
                    idempotency_key=idempotency_key,
                    charge_operation_id=charge_operation_id,
                    amount=money_to_proto(amount),
                    reference=reference,
                ),
            )
        )

    async def sync_operation(self, operation_id: str) -> OperationState:
        # trigger "" is the contract's value for a sync asked by an operator or the recovery
        # worker (here, through RecoverPayment); "unverified_webhook" is the webhook adapter's.
        operation = await self._call(
            self._stub.SyncOperation, gateway_pb2.SyncOperationRequest(operation_id=operation_id)
        )
        status = gateway_pb2.OperationStatus.Name(operation.status)
        return OperationState(
            operation_id=operation.operation_id,
            status=status.removeprefix("OPERATION_STATUS_").lower(),
            failure_reason=operation.failure_reason,
        )


def _result(operation: gateway_pb2.Operation) -> ProviderResult:
    return ProviderResult(
        operation_id=operation.operation_id,
        answer=_ANSWER.get(operation.status, ProviderAnswer.UNKNOWN),
        failure_reason=operation.failure_reason,
    )

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
from recovery_worker.domain.model import (
    PaymentStatus,
    PaymentView,
    RecoveryAttempt,
    RecoveryOutcome,
    RecoveryResult,
)
from recovery_worker.domain.reconcile import (
    REASON_CODE,
    LedgerTxn,
    Mismatch,
    PaymentFacts,
    Posting,
    ProviderOp,
)

PAGE_SIZE = 100
JOURNAL_PAGE = 500

_STATUS = {
    PaymentStatus.INITIATED: payment_pb2.PAYMENT_STATUS_INITIATED,
    PaymentStatus.PENDING: payment_pb2.PAYMENT_STATUS_PENDING,
    PaymentStatus.REFUNDING: payment_pb2.PAYMENT_STATUS_REFUNDING,
}
# An outcome a newer payment service adds reads as UNKNOWN: asked again at the next rung.
_OUTCOME = {
    payment_pb2.RECOVERY_OUTCOME_SETTLED: RecoveryOutcome.SETTLED,
    payment_pb2.RECOVERY_OUTCOME_UNKNOWN: RecoveryOutcome.UNKNOWN,
    payment_pb2.RECOVERY_OUTCOME_RESUMED: RecoveryOutcome.RESUMED,
    payment_pb2.RECOVERY_OUTCOME_ESCALATED: RecoveryOutcome.ESCALATED,
    payment_pb2.RECOVERY_OUTCOME_NOT_STUCK: RecoveryOutcome.NOT_STUCK,
}
# Who the payment's audit trail says asked.
REQUESTED_BY = "recovery-worker"


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


def _facts(payment: payment_pb2.Payment) -> PaymentFacts:
    view = _view(payment)
    return PaymentFacts(
        payment_id=view.payment_id,
        kind=view.kind,
        status=view.status,
        amount_minor=payment.amount.amount_minor,
        currency=payment.amount.currency,
        source_account_id=payment.source_account_id,
        destination_account_id=payment.destination_account_id,
        gateway_operation_id=payment.gateway_operation_id,
        created_at=view.created_at,
    )


def _txn(txn: wallet_pb2.LedgerTransaction) -> LedgerTxn:
    return LedgerTxn(
        transaction_id=txn.transaction_id,
        operation_ref=txn.operation_ref,
        postings=tuple(
            Posting(e.account_id, e.amount.amount_minor, e.amount.currency) for e in txn.entries
        ),
        created_at=txn.created_at.ToDatetime(UTC),
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

    async def recover(self, attempt: RecoveryAttempt) -> RecoveryResult:
        request = payment_pb2.RecoverPaymentRequest(
            payment_id=attempt.payment_id,
            attempt_id=attempt.attempt_id,
            rung=attempt.rung,
            requested_by=REQUESTED_BY,
        )
        request.next_attempt_at.FromDatetime(attempt.next_attempt_at)
        try:
            response = await self._stub.RecoverPayment(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            _raise(exc, "payment service")
        return RecoveryResult(
            _OUTCOME.get(response.outcome, RecoveryOutcome.UNKNOWN), error=response.step.error
        )

    async def created_since(self, created_after: datetime) -> AsyncIterator[Sequence[PaymentFacts]]:
        token = ""
        while True:
            request = payment_pb2.ListPaymentsRequest(page_size=PAGE_SIZE, page_token=token)
            request.created_after.FromDatetime(created_after)
            try:
                page = await self._stub.ListPayments(request, timeout=self._timeout_s)
            except grpc.aio.AioRpcError as exc:
                _raise(exc, "payment service")
            yield [_facts(p) for p in page.payments]
            token = page.next_page_token
            if not token:
                return

    async def get(self, payment_id: str) -> PaymentFacts | None:
        request = payment_pb2.GetPaymentRequest(payment_id=payment_id)
        try:
            return _facts(await self._stub.GetPayment(request, timeout=self._timeout_s))
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.NOT_FOUND:
                return None
            _raise(exc, "payment service")

    async def open_case(self, mismatch: Mismatch) -> str:
        request = payment_pb2.OpenReviewCaseRequest(
            payment_id=mismatch.payment_id,
            reason_code=REASON_CODE,
            reason=mismatch.reason,
            evidence=dict(mismatch.evidence),
        )
        try:
            case = await self._stub.OpenReviewCase(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            _raise(exc, "payment service")
        return case.case_id


class GrpcGateway:
    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float) -> None:
        self._stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        self._timeout_s = timeout_s

    async def get(self, operation_id: str) -> ProviderOp | None:
        request = gateway_pb2.GetOperationRequest(operation_id=operation_id)
        try:
            op = await self._stub.GetOperation(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.NOT_FOUND:
                return None
            _raise(exc, "gateway service")
        status = gateway_pb2.OperationStatus.Name(op.status).removeprefix("OPERATION_STATUS_")
        return ProviderOp(
            op.operation_id, status.lower(), op.amount.amount_minor, op.amount.currency
        )


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

    async def by_refs(self, refs: Sequence[str]) -> Sequence[LedgerTxn]:
        if not refs:
            return []
        request = wallet_pb2.GetTransactionsRequest(operation_refs=refs)
        try:
            response = await self._stub.GetTransactions(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            _raise(exc, "wallet service")
        return [_txn(t) for t in response.transactions]

    async def created_since(self, created_after: datetime) -> AsyncIterator[Sequence[LedgerTxn]]:
        token = ""
        while True:
            request = wallet_pb2.ListTransactionsRequest(page_size=JOURNAL_PAGE, page_token=token)
            request.created_after.FromDatetime(created_after)
            try:
                page = await self._stub.ListTransactions(request, timeout=self._timeout_s)
            except grpc.aio.AioRpcError as exc:
                _raise(exc, "wallet service")
            yield [_txn(t) for t in page.transactions]
            token = page.next_page_token
            if not token:
                return

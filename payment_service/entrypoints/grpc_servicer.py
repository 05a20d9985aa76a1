"""PaymentService over gRPC: converts messages, calls the service layer, converts back.

No try/except here: domain errors become statuses in common.grpc.errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC
from typing import Any

import grpc

from common.admission import Admission
from common.auth import SYSTEM, Access, current_principal
from common.grpc.auth import Policy
from common.grpc.convert import money_from_request, money_to_proto, timestamp
from common.money import Money
from payment_service.domain.model import (
    Payment,
    PaymentFilter,
    PaymentKind,
    PaymentStatus,
    PaymentStep,
    RecoveryOutcome,
    RecoveryRequest,
    StatusChange,
)
from payment_service.domain.review import Resolution, ReviewOpening, ReviewStatus
from payment_service.service_layer.ports import ChangeFeed
from payment_service.service_layer.reviews import CaseView, ReviewService
from payment_service.service_layer.services import PaymentService
from paysuite.common.v1 import money_pb2
from paysuite.payment.v1 import payment_pb2, payment_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]

_STATUS = {s: payment_pb2.PaymentStatus.Value(f"PAYMENT_STATUS_{s.name}") for s in PaymentStatus}
_KIND = {k: payment_pb2.PaymentKind.Value(f"PAYMENT_KIND_{k.name}") for k in PaymentKind}
# Filters: the UNSPECIFIED value (0) maps to nothing, i.e. any.
_STATUS_OF = {number: status for status, number in _STATUS.items()}
_KIND_OF = {number: kind for kind, number in _KIND.items()}
_CASE_STATUS = {
    s: payment_pb2.ReviewCaseStatus.Value(f"REVIEW_CASE_STATUS_{s.name}") for s in ReviewStatus
}
_CASE_STATUS_OF = {number: status for status, number in _CASE_STATUS.items()}
_RESOLUTION = {
    r: payment_pb2.ReviewResolution.Value(f"REVIEW_RESOLUTION_{r.name}") for r in Resolution
}
_RESOLUTION_OF = {number: resolution for resolution, number in _RESOLUTION.items()}
_RECOVERY_OUTCOME = {
    o: payment_pb2.RecoveryOutcome.Value(f"RECOVERY_OUTCOME_{o.name}") for o in RecoveryOutcome
}


def payment_to_proto(payment: Payment) -> payment_pb2.Payment:
    return payment_pb2.Payment(
        payment_id=payment.payment_id,
        kind=_KIND[payment.kind],
        status=_STATUS[payment.status],
        amount=money_to_proto(payment.amount),
        source_account_id=payment.source_account_id,
        destination_account_id=payment.destination_account_id,
        idempotency_key=payment.idempotency_key,
        failure_reason=payment.failure_reason,
        created_at=timestamp(payment.created_at),
        updated_at=timestamp(payment.updated_at),
        version=payment.version,
        gateway_operation_id=payment.gateway_operation_id,
        destination=payment.saga.destination,
        parent_payment_id=payment.parent_payment_id,
        refunded_amount=_refund_money(payment, payment.saga.refunded_minor),
        refund_pending_amount=_refund_money(payment, payment.saga.refund_reserved_minor),
    )


def _refund_money(payment: Payment, amount_minor: int) -> money_pb2.Money | None:
    if payment.kind is not PaymentKind.DEPOSIT:
        return None
    return money_to_proto(Money(amount_minor, payment.amount.currency))


def change_to_proto(change: StatusChange) -> payment_pb2.PaymentStatusChange:
    return payment_pb2.PaymentStatusChange(
        sequence=change.sequence,
        from_status=(
            _STATUS[change.from_status]
            if change.from_status
            else payment_pb2.PAYMENT_STATUS_UNSPECIFIED
        ),
        to_status=_STATUS[change.to_status],
        reason=change.reason,
        occurred_at=timestamp(change.occurred_at),
    )


def step_to_proto(step: PaymentStep) -> payment_pb2.PaymentStep:
    return payment_pb2.PaymentStep(
        step=step.step,
        event_type=step.event_type,
        occurred_at=timestamp(step.occurred_at),
        data=dict(step.data),
        error=step.error,
    )


def evidence_to_proto(opening: ReviewOpening) -> payment_pb2.ReviewEvidence:
    return payment_pb2.ReviewEvidence(
        reason_code=opening.reason_code.value,
        reason=opening.reason,
        source=opening.source,
        occurred_at=timestamp(opening.occurred_at),
        details=dict(opening.details),
    )


def case_to_proto(view: CaseView) -> payment_pb2.ReviewCase:
    case, decision = view.case, view.case.decision
    return payment_pb2.ReviewCase(
        case_id=case.case_id,
        payment_id=case.payment_id,
        reason_code=case.reason_code.value,
        reason=case.reason,
        opened_at=timestamp(case.opened_at),
        status=_CASE_STATUS[case.status],
        resolution=(
            _RESOLUTION[decision.resolution]
            if decision
            else payment_pb2.REVIEW_RESOLUTION_UNSPECIFIED
        ),
        note=decision.note if decision else "",
        resolved_by=decision.resolved_by if decision else "",
        resolved_at=timestamp(decision.resolved_at) if decision else None,
        age_seconds=int(view.age.total_seconds()),
        overdue=view.overdue,
        evidence=[evidence_to_proto(e) for e in case.evidence],
    )


SERVICE_NAME = payment_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name

# Who may call what (common.auth); CALLER methods check ownership in the service layer, and
# idempotency keys are scoped to the caller.
POLICY = Policy(
    SERVICE_NAME,
    {
        "CreateDeposit": Access.CALLER,
        "CreateWithdrawal": Access.CALLER,
        "CreateTransfer": Access.CALLER,
        "RefundPayment": Access.CALLER,
        "CancelPayment": Access.CALLER,
        "GetPayment": Access.CALLER,
        "ListPayments": Access.CALLER,
        "ListPaymentEvents": Access.CALLER,
        "WatchPayment": Access.CALLER,
        "ListReviewCases": Access.OPERATOR,
        "GetReviewCase": Access.OPERATOR,
        "ResolveReviewCase": Access.OPERATOR,
        "OpenReviewCase": Access.OPERATOR,
        # The recovery worker's escalation: it acts for the system, never for a caller.
        "RecoverPayment": Access.SERVICE,
    },
)


class PaymentServicer(payment_pb2_grpc.PaymentServiceServicer):
    def __init__(
        self,
        service: PaymentService,
        *,
        feed: ChangeFeed,
        reviews: ReviewService,
        admission: Admission | None = None,
    ) -> None:
        self._service = service
        self._feed = feed
        self._reviews = reviews
        self._admission = admission

    async def _admit(self) -> None:
        """Calls that start a saga pass admission control first (common/admission.py): under
        overload they are refused before anything is written."""
        if self._admission is not None:
            await self._admission.admit(current_principal())

    async def CreateDeposit(
        self, request: payment_pb2.CreateDepositRequest, context: Context
    ) -> payment_pb2.Payment:
        await self._admit()
        payment = await self._service.create_deposit(
            idempotency_key=request.idempotency_key,
            account_id=request.account_id,
            amount=money_from_request(
                request.amount, field="amount", present=request.HasField("amount")
            ),
            payment_method=request.payment_method,
            caller=current_principal(),
        )
        return payment_to_proto(payment)

    async def GetPayment(
        self, request: payment_pb2.GetPaymentRequest, context: Context
    ) -> payment_pb2.Payment:
        return payment_to_proto(
            await self._service.get_payment(request.payment_id, caller=current_principal())
        )

    async def ListPayments(
        self, request: payment_pb2.ListPaymentsRequest, context: Context
    ) -> payment_pb2.ListPaymentsResponse:
        page = await self._service.list_payments(
            account_id=request.account_id,
            page_size=request.page_size,
            page_token=request.page_token,
            caller=current_principal(),
            where=PaymentFilter(
                kind=_KIND_OF.get(request.kind),
                status=_STATUS_OF.get(request.status),
                created_after=(
                    request.created_after.ToDatetime(UTC)
                    if request.HasField("created_after")
                    else None
                ),
                created_before=(
                    request.created_before.ToDatetime(UTC)
                    if request.HasField("created_before")
                    else None
                ),
            ),
        )
        return payment_pb2.ListPaymentsResponse(
            payments=[payment_to_proto(p) for p in page.payments],
            next_page_token=page.next_page_token,
        )

    async def ListPaymentEvents(
        self, request: payment_pb2.ListPaymentEventsRequest, context: Context
    ) -> payment_pb2.ListPaymentEventsResponse:
        changes = await self._service.history(request.payment_id, caller=current_principal())
        steps = await self._service.audit_trail(request.payment_id, caller=SYSTEM)
        return payment_pb2.ListPaymentEventsResponse(
            changes=[change_to_proto(c) for c in changes],
            steps=[step_to_proto(s) for s in steps],
        )

    async def CreateWithdrawal(
        self, request: payment_pb2.CreateWithdrawalRequest, context: Context
    ) -> payment_pb2.Payment:
        await self._admit()
        payment = await self._service.create_withdrawal(
            idempotency_key=request.idempotency_key,
            account_id=request.account_id,
            amount=money_from_request(
                request.amount, field="amount", present=request.HasField("amount")
            ),
            destination=request.destination,
            caller=current_principal(),
        )
        return payment_to_proto(payment)

    async def CreateTransfer(
        self, request: payment_pb2.CreateTransferRequest, context: Context
    ) -> payment_pb2.Payment:
        await self._admit()
        payment = await self._service.create_transfer(
            idempotency_key=request.idempotency_key,
            source_account_id=request.source_account_id,
            destination_account_id=request.destination_account_id,
            amount=money_from_request(
                request.amount, field="amount", present=request.HasField("amount")
            ),
            caller=current_principal(),
        )
        return payment_to_proto(payment)

    async def RefundPayment(
        self, request: payment_pb2.RefundPaymentRequest, context: Context
    ) -> payment_pb2.Payment:
        await self._admit()
        amount = (
            money_from_request(request.amount, field="amount", present=True)
            if request.HasField("amount")
            else None
        )
        payment = await self._service.refund_payment(
            idempotency_key=request.idempotency_key,
            payment_id=request.payment_id,
            amount=amount,
            caller=current_principal(),
        )
        return payment_to_proto(payment)

    async def CancelPayment(
        self, request: payment_pb2.CancelPaymentRequest, context: Context
    ) -> payment_pb2.Payment:
        return payment_to_proto(
            await self._service.cancel_payment(request.payment_id, caller=current_principal())
        )

    async def WatchPayment(
        self, request: payment_pb2.WatchPaymentRequest, context: Context
    ) -> AsyncIterator[payment_pb2.Payment]:
        async for payment in self._service.watch(
            request.payment_id, feed=self._feed, caller=current_principal()
        ):
            yield payment_to_proto(payment)

    async def ListReviewCases(
        self, request: payment_pb2.ListReviewCasesRequest, context: Context
    ) -> payment_pb2.ListReviewCasesResponse:
        page = await self._reviews.list_cases(
            status=_CASE_STATUS_OF.get(request.status, ReviewStatus.OPEN),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return payment_pb2.ListReviewCasesResponse(
            cases=[case_to_proto(view) for view in page.cases],
            next_page_token=page.next_page_token,
        )

    async def GetReviewCase(
        self, request: payment_pb2.GetReviewCaseRequest, context: Context
    ) -> payment_pb2.GetReviewCaseResponse:
        evidence = await self._reviews.get_case(request.case_id)
        return payment_pb2.GetReviewCaseResponse(
            review_case=case_to_proto(evidence.view),
            payment=payment_to_proto(evidence.payment),
            steps=[step_to_proto(s) for s in evidence.steps],
        )

    async def ResolveReviewCase(
        self, request: payment_pb2.ResolveReviewCaseRequest, context: Context
    ) -> payment_pb2.ReviewCase:
        view = await self._reviews.resolve(
            case_id=request.case_id,
            resolution=_RESOLUTION_OF.get(request.resolution),
            note=request.note,
            # Who decided is who called, as verified: never what the request says.
            resolved_by=current_principal().subject,
        )
        return case_to_proto(view)

    async def OpenReviewCase(
        self, request: payment_pb2.OpenReviewCaseRequest, context: Context
    ) -> payment_pb2.ReviewCase:
        view = await self._reviews.open_case(
            payment_id=request.payment_id,
            reason_code=request.reason_code,
            reason=request.reason,
            evidence=dict(request.evidence),
        )
        return case_to_proto(view)

    async def RecoverPayment(
        self, request: payment_pb2.RecoverPaymentRequest, context: Context
    ) -> payment_pb2.RecoverPaymentResponse:
        record = await self._service.recover(
            RecoveryRequest(
                payment_id=request.payment_id,
                attempt_id=request.attempt_id,
                requested_by=request.requested_by,
                rung=request.rung,
                next_attempt_at=(
                    request.next_attempt_at.ToDatetime(UTC)
                    if request.HasField("next_attempt_at")
                    else None
                ),
            )
        )
        return payment_pb2.RecoverPaymentResponse(
            outcome=_RECOVERY_OUTCOME[record.outcome],
            payment=payment_to_proto(record.payment),
            step=step_to_proto(record.step) if record.step else None,
        )

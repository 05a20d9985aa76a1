"""Asking a provider what became of an operation, and applying its answer.

The recovery worker syncs operations whose outcome is unknown; the webhook adapter asks for a
sync when a callback could not be verified (it is recorded, then the provider is asked instead
of believed). The answer goes through the same state machine as a provider event.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from common.errors import DependencyUnavailable, FieldViolation, ValidationError
from gateway_service.domain import events
from gateway_service.domain.model import Operation, OperationStatus, ProviderEventStatus
from gateway_service.domain.provider import (
    InstructionKind,
    ProviderError,
    ReportedStatus,
    StatusReport,
)
from gateway_service.service_layer.operations import Operations
from gateway_service.service_layer.ports import UnitOfWorkFactory
from gateway_service.service_layer.providers import ProviderRouter

log = structlog.get_logger(__name__)

UNVERIFIED_WEBHOOK = "unverified_webhook"
NOT_PROCESSED = "not_processed_by_provider"


class StatusSync:
    def __init__(
        self,
        *,
        uow: UnitOfWorkFactory,
        providers: ProviderRouter,
        operations: Operations,
        not_found_grace_s: float = 60.0,
    ) -> None:
        self._uow = uow
        self._providers = providers
        self._operations = operations
        self._not_found_grace_s = not_found_grace_s

    async def sync_operation(
        self, operation_id: str, *, trigger: str = "", deadline: float | None = None
    ) -> Operation:
        """Asks the operation's provider what became of it and applies the answer through the
        same state machine as a webhook. A terminal operation is not asked about again."""
        if trigger not in ("", UNVERIFIED_WEBHOOK):
            raise ValidationError(FieldViolation("trigger", f"unknown trigger {trigger!r}"))
        operation = await self._operations.get_operation(operation_id)
        if trigger:
            await self._record_rejected_webhook(operation)
        if operation.status.is_terminal:
            return operation
        provider = self._providers.get(operation.provider)
        try:
            report = await provider.get_status(
                InstructionKind(operation.kind.value),
                idempotency_key=operation.idempotency_key,
                provider_reference=operation.provider_reference or "",
                deadline=deadline,
            )
        except ProviderError as exc:
            raise DependencyUnavailable(f"cannot ask {operation.provider}: {exc}") from exc
        log.info(
            "operation.synced",
            operation_id=operation.operation_id,
            provider=operation.provider,
            reported=report.status.value,
        )
        return await self._operations.update(operation.operation_id, self._apply_report(report))

    def _apply_report(self, report: StatusReport) -> Callable[[Operation], bool]:
        def apply(operation: Operation) -> bool:
            if report.status is ReportedStatus.NOT_FOUND:
                return self._not_found(operation)
            outcome = ProviderEventStatus.IGNORED
            if not operation.status.is_terminal or report.status is not ReportedStatus.PENDING:
                outcome = operation.apply_provider_report(
                    kind=operation.kind,
                    status=OperationStatus(report.status.value),
                    failure_reason=report.failure_reason,
                    provider_event_id=f"sync:{operation.operation_id}:{operation.version}",
                    provider_reference=report.provider_reference,
                    amount=report.amount,
                )
            return outcome.changes_operation

        return apply

    def _not_found(self, operation: Operation) -> bool:
        """The provider has no record of our request: it moved no money. Taken as final
        only for an operation older than the grace period, so a request still in flight
        to the provider is not failed under its feet."""
        if operation.status is not OperationStatus.CREATED or operation.updated_at is None:
            return False
        age = (datetime.now(UTC) - operation.updated_at).total_seconds()
        if age < self._not_found_grace_s:
            return False
        return operation.mark_rejected(NOT_PROCESSED)

    async def _record_rejected_webhook(self, operation: Operation) -> None:
        fact = events.WebhookRejected(
            provider=operation.provider,
            provider_event_id="",
            event_type="",
            operation_id=operation.operation_id,
            outcome="invalid_signature",
        )
        async with self._uow() as uow:
            uow.publish(fact)
            await uow.commit()

"""Gateway use cases: asking providers to move money, and hearing what they did.

Each database step runs in one unit of work (state change + outbox rows in one transaction).
A provider call never runs inside a transaction: the operation is committed as CREATED first,
so a crash or timeout mid-call leaves a record that the same request (or the recovery worker)
can pick up, and the provider's idempotency on our key makes asking again safe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import structlog

from common.errors import (
    FieldViolation,
    IdempotencyConflict,
    NotFound,
    ValidationError,
    require,
    retry_on_conflict,
)
from common.ids import parse_id
from common.money import Money
from common.uow import UnitOfWork as BaseUnitOfWork
from gateway_service.domain.model import (
    PROVIDER_EVENT_OUTCOMES,
    Operation,
    OperationKind,
    OperationStatus,
    ProviderEvent,
    ProviderEventStatus,
)
from gateway_service.domain.provider import (
    ChargeInstruction,
    ProviderAcceptance,
    ProviderRejected,
    ProviderUnavailable,
)

log = structlog.get_logger(__name__)

# Providers commonly accept up to 255 characters for tokens and event ids.
MAX_PROVIDER_FIELD = 255


class OperationStore(Protocol):
    """Operations by id, idempotency key or provider reference. `for_update` locks the row
    until the unit of work ends; every change to an existing operation is made under it."""

    async def get(self, operation_id: str, *, for_update: bool = False) -> Operation | None: ...
    async def find_by_idempotency_key(self, idempotency_key: str) -> Operation | None: ...
    async def find_by_provider_reference(
        self, provider: str, provider_reference: str, *, for_update: bool = False
    ) -> Operation | None: ...
    async def add(self, operation: Operation) -> None: ...
    async def save(self, operation: Operation) -> None: ...


class ProviderEventStore(Protocol):
    async def claim(self, event: ProviderEvent) -> bool:
        """Records the event as received; False if (provider, provider_event_id) already was.
        A concurrent delivery of the same event waits for the first one's transaction."""
        ...

    async def operation_of(self, provider: str, provider_event_id: str) -> str | None: ...
    async def resolve(
        self,
        provider: str,
        provider_event_id: str,
        *,
        operation_id: str | None,
        status: ProviderEventStatus,
    ) -> None: ...


class UnitOfWork(BaseUnitOfWork, Protocol):
    @property
    def operations(self) -> OperationStore: ...
    @property
    def provider_events(self) -> ProviderEventStore: ...


class Provider(Protocol):
    """A payment provider. Calls raise the gateway_service.domain.provider error family."""

    @property
    def name(self) -> str: ...

    async def create_charge(self, instruction: ChargeInstruction) -> ProviderAcceptance: ...

    def operation_id_in_event(self, raw_payload: bytes) -> str | None:
        """Our operation id as the provider echoes it in an event body, if it does."""
        ...


@dataclass(frozen=True, slots=True)
class ProviderEventReceipt:
    first_delivery: bool
    operation_id: str | None
    # None for a repeated delivery: that one changed nothing.
    status: ProviderEventStatus | None


class GatewayService:
    def __init__(self, *, uow: Callable[[], UnitOfWork], provider: Provider) -> None:
        self._uow = uow
        self._provider = provider

    async def charge(
        self, *, idempotency_key: str, amount: Money, payment_method: str, reference: str
    ) -> Operation:
        """Asks the provider to charge `payment_method`; idempotent on `idempotency_key`.

        Normally returns the operation PENDING. CREATED means the provider's answer is
        unknown (it timed out or was unreachable): the caller may retry the same request.
        """
        require(idempotency_key, "idempotency_key")
        require(reference, "reference")
        require(payment_method, "payment_method", max_length=MAX_PROVIDER_FIELD)
        operation = await retry_on_conflict(
            lambda: self._record_charge(idempotency_key, amount, payment_method, reference)
        )
        if operation.status is not OperationStatus.CREATED:
            return operation
        return await self._submit_charge(operation)

    async def get_operation(self, operation_id: str) -> Operation:
        operation_id = parse_id(operation_id, "operation_id")
        async with self._uow() as uow:
            operation = await uow.operations.get(operation_id)
        if operation is None:
            raise NotFound("operation", operation_id)
        return operation

    async def handle_provider_event(
        self,
        *,
        provider: str,
        provider_event_id: str,
        event_type: str,
        provider_reference: str,
        failure_reason: str,
        occurred_at: datetime | None,
        raw_payload: bytes,
    ) -> ProviderEventReceipt:
        """Records a provider event once and applies what it says; idempotent on
        (provider, provider_event_id). An event we cannot match is kept, never dropped."""
        self._check_provider(provider)
        require(provider_event_id, "provider_event_id", max_length=MAX_PROVIDER_FIELD)
        require(event_type, "event_type")
        event = ProviderEvent(
            provider=provider,
            provider_event_id=provider_event_id,
            event_type=event_type,
            provider_reference=provider_reference,
            failure_reason=failure_reason,
            occurred_at=occurred_at,
            raw_payload=raw_payload,
        )
        return await retry_on_conflict(lambda: self._record_provider_event(event))

    # -- charge ---------------------------------------------------------------------------

    async def _record_charge(
        self, idempotency_key: str, amount: Money, payment_method: str, reference: str
    ) -> Operation:
        async with self._uow() as uow:
            existing = await uow.operations.find_by_idempotency_key(idempotency_key)
            if existing is not None:
                return _replayed(existing, amount, payment_method, reference)
            operation = Operation.charge(
                idempotency_key=idempotency_key,
                amount=amount,
                payment_method=payment_method,
                reference=reference,
                provider=self._provider.name,
            )
            # A concurrent request with the same key makes this insert a ConcurrentUpdate;
            # retry_on_conflict then re-runs this step, which finds the winner's operation.
            await uow.operations.add(operation)
            uow.track(operation)
            await uow.commit()
            return operation

    async def _submit_charge(self, operation: Operation) -> Operation:
        instruction = ChargeInstruction(
            idempotency_key=operation.idempotency_key,
            amount=operation.amount,
            payment_method=operation.payment_method,
            reference=operation.operation_id,
        )
        try:
            acceptance = await self._provider.create_charge(instruction)
        except ProviderRejected as exc:
            log.info("charge.rejected", operation_id=operation.operation_id, code=exc.code)
            return await self._update(operation.operation_id, _rejection(exc.code))
        except ProviderUnavailable as exc:
            # Outcome unknown: the provider may have taken the charge. Failing it here could
            # lose a real charge, so it stays CREATED until the provider says what happened.
            log.warning(
                "charge.outcome_unknown", operation_id=operation.operation_id, error=str(exc)
            )
            return operation
        return await self._update(
            operation.operation_id, _acceptance(acceptance.provider_reference)
        )

    async def _update(self, operation_id: str, change: Callable[[Operation], bool]) -> Operation:
        async def attempt() -> Operation:
            async with self._uow() as uow:
                operation = await uow.operations.get(operation_id, for_update=True)
                if operation is None:
                    raise NotFound("operation", operation_id)
                if change(operation):
                    uow.track(operation)
                    await uow.operations.save(operation)
                    await uow.commit()
                return operation

        return await retry_on_conflict(attempt)

    # -- provider events ------------------------------------------------------------------

    def _check_provider(self, provider: str) -> None:
        require(provider, "provider")
        if provider != self._provider.name:
            raise ValidationError(FieldViolation("provider", f"unknown provider {provider!r}"))

    async def _record_provider_event(self, event: ProviderEvent) -> ProviderEventReceipt:
        async with self._uow() as uow:
            if not await uow.provider_events.claim(event):
                known = await uow.provider_events.operation_of(
                    event.provider, event.provider_event_id
                )
                return ProviderEventReceipt(first_delivery=False, operation_id=known, status=None)
            operation, status = await self._apply(uow, event)
            operation_id = operation.operation_id if operation is not None else None
            await uow.provider_events.resolve(
                event.provider, event.provider_event_id, operation_id=operation_id, status=status
            )
            if operation is not None and status in _CHANGES_OPERATION:
                uow.track(operation)
                await uow.operations.save(operation)
            await uow.commit()
        _log_provider_event(event, operation, status)
        return ProviderEventReceipt(first_delivery=True, operation_id=operation_id, status=status)

    async def _apply(
        self, uow: UnitOfWork, event: ProviderEvent
    ) -> tuple[Operation | None, ProviderEventStatus]:
        meaning = PROVIDER_EVENT_OUTCOMES.get(event.event_type)
        if meaning is None:
            return None, ProviderEventStatus.IGNORED
        operation = await self._match(uow, event)
        if operation is None:
            return None, ProviderEventStatus.UNMATCHED
        kind, outcome = meaning
        status = operation.apply_provider_outcome(
            kind=kind,
            outcome=outcome,
            failure_reason=event.failure_reason,
            provider_event_id=event.provider_event_id,
            provider_reference=event.provider_reference,
        )
        return operation, status

    async def _match(self, uow: UnitOfWork, event: ProviderEvent) -> Operation | None:
        if not event.provider_reference:
            return None
        operation = await uow.operations.find_by_provider_reference(
            event.provider, event.provider_reference, for_update=True
        )
        if operation is not None:
            return operation
        # The provider's event can overtake our commit of its answer to the request: the
        # operation is then still CREATED, without a provider reference. The provider echoes
        # our operation id, and the row lock orders us against that commit either way.
        operation_id = self._provider.operation_id_in_event(event.raw_payload)
        if operation_id is None:
            return None
        operation = await uow.operations.get(operation_id, for_update=True)
        if operation is None or operation.provider != event.provider:
            return None
        if operation.provider_reference not in (None, event.provider_reference):
            return None
        return operation


_CHANGES_OPERATION = frozenset({ProviderEventStatus.APPLIED, ProviderEventStatus.CONFLICT})


def _replayed(existing: Operation, amount: Money, payment_method: str, reference: str) -> Operation:
    if not existing.same_request(
        kind=OperationKind.CHARGE, amount=amount, payment_method=payment_method, reference=reference
    ):
        raise IdempotencyConflict(
            f"idempotency_key {existing.idempotency_key!r} was already used for a different"
            " operation"
        )
    return existing


def _rejection(code: str) -> Callable[[Operation], bool]:
    return lambda operation: operation.mark_rejected(code)


def _acceptance(provider_reference: str) -> Callable[[Operation], bool]:
    def accept(operation: Operation) -> bool:
        changed = operation.mark_accepted(provider_reference)
        if not changed and operation.provider_reference not in (None, provider_reference):
            log.warning(
                "charge.provider_reference_mismatch",
                operation_id=operation.operation_id,
                stored=operation.provider_reference,
                answered=provider_reference,
            )
        return changed

    return accept


def _log_provider_event(
    event: ProviderEvent, operation: Operation | None, status: ProviderEventStatus
) -> None:
    fields = {
        "provider": event.provider,
        "provider_event_id": event.provider_event_id,
        "event_type": event.event_type,
        "provider_reference": event.provider_reference,
        "status": status.value,
    }
    if operation is not None:
        fields.update(operation_id=operation.operation_id, operation_status=operation.status.value)
    if status is ProviderEventStatus.UNMATCHED:
        # Kept in provider_events with this status: reconciliation can still match it.
        log.warning("provider_event.unmatched", **fields)
    elif status is ProviderEventStatus.CONFLICT:
        log.warning("provider_event.conflict", **fields)
    else:
        log.info("provider_event.recorded", **fields)

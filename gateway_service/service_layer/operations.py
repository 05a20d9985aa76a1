"""Asking a provider to move money: charge, payout and refund, and reading an operation back.

Each database step runs in one unit of work (state change + outbox rows in one transaction).
A provider call never runs inside a transaction: the operation is committed as CREATED first,
so a crash or timeout mid-call leaves a record that the same request (or the recovery worker)
can pick up, and the provider's idempotency on our key makes asking again safe.

Failover: a CREATED operation is moved to the next provider only while no provider can have
acted on it (its breaker was open, the connection was refused, or it answered "not
processed"). Once a provider may have acted (a timeout, a 5xx), the operation is bound to it
and only that provider's answer settles it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import structlog

from common.errors import (
    ConcurrentUpdate,
    DependencyUnavailable,
    FailedPrecondition,
    FieldViolation,
    NotFound,
    ValidationError,
    require,
    retry_on_conflict,
)
from common.ids import parse_id
from common.money import Money
from gateway_service.domain.model import (
    UNSPECIFIED_FAILURE,
    Operation,
    OperationKind,
    OperationStatus,
)
from gateway_service.domain.provider import (
    MAX_PROVIDER_FIELD,
    Instruction,
    InstructionKind,
    ProviderNotProcessed,
    ProviderRejected,
    ProviderUnavailable,
)
from gateway_service.service_layer.ports import UnitOfWork, UnitOfWorkFactory
from gateway_service.service_layer.providers import GuardedProvider, ProviderRouter
from gateway_service.service_layer.writes import (
    Change,
    GroupedWrites,
    OpenRequest,
    replayed,
    update_operation,
)

log = structlog.get_logger(__name__)


class _Locks:
    """Per-operation submission locks: two concurrent requests for one operation in this
    process never ask two providers at once. (Across replicas the callers' own claim of the
    saga step, and the providers' idempotency, keep this rare; see gateway_service/README.md.)
    A lock is forgotten when its last user leaves, so the table does not grow."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, operation_id: str) -> AsyncIterator[bool]:
        """Holds the operation's lock; yields whether another request held it first."""
        lock, users = self._held.get(operation_id, (asyncio.Lock(), 0))
        self._held[operation_id] = (lock, users + 1)
        try:
            async with lock:
                yield users > 0
        finally:
            lock, users = self._held[operation_id]
            if users == 1:
                del self._held[operation_id]
            else:
                self._held[operation_id] = (lock, users - 1)


class Operations:
    def __init__(
        self, *, uow: UnitOfWorkFactory, providers: ProviderRouter, group_commit: bool = False
    ) -> None:
        """With `group_commit` (the service's default), records and updates that arrive
        together share a transaction (service_layer/writes.py)."""
        self._uow = uow
        self._providers = providers
        self._locks = _Locks()
        self._writes = GroupedWrites(uow, record_alone=self._record) if group_commit else None

    async def charge(
        self,
        *,
        idempotency_key: str,
        amount: Money,
        payment_method: str,
        reference: str,
        deadline: float | None = None,
    ) -> Operation:
        """Asks a provider to charge `payment_method`; idempotent on `idempotency_key`.

        Normally returns the operation PENDING. CREATED with `outcome_unknown` means the
        provider did not answer in time: it may have charged, so nobody may assume otherwise.
        Raises DependencyUnavailable when no provider could take it (nothing was charged).
        """
        require(payment_method, "payment_method", max_length=MAX_PROVIDER_FIELD)
        request = OpenRequest(
            kind=OperationKind.CHARGE,
            idempotency_key=idempotency_key,
            amount=amount,
            instrument=payment_method,
            reference=reference,
            provider=self._first_provider(),
        )
        return await self._open(request, deadline)

    async def payout(
        self,
        *,
        idempotency_key: str,
        amount: Money,
        destination: str,
        reference: str,
        deadline: float | None = None,
    ) -> Operation:
        require(destination, "destination", max_length=MAX_PROVIDER_FIELD)
        request = OpenRequest(
            kind=OperationKind.PAYOUT,
            idempotency_key=idempotency_key,
            amount=amount,
            instrument=destination,
            reference=reference,
            provider=self._first_provider(),
        )
        return await self._open(request, deadline)

    async def refund(
        self,
        *,
        idempotency_key: str,
        charge_operation_id: str,
        amount: Money,
        reference: str,
        deadline: float | None = None,
    ) -> Operation:
        """Refunds (part of) a succeeded charge at the provider that took it."""
        charge_id = parse_id(charge_operation_id, "charge_operation_id")
        charge = await self.get_operation(charge_id)
        _check_refundable(charge, amount)
        request = OpenRequest(
            kind=OperationKind.REFUND,
            idempotency_key=idempotency_key,
            amount=amount,
            instrument=charge.provider_reference or "",
            reference=reference,
            provider=charge.provider,
            parent_operation_id=charge.operation_id,
        )
        return await self._open(request, deadline)

    async def get_operation(self, operation_id: str) -> Operation:
        """The operation with its history."""
        operation_id = parse_id(operation_id, "operation_id")
        async with self._uow() as uow:
            operation = await uow.operations.get(operation_id)
            if operation is not None:
                operation.history = await uow.operations.history(operation_id)
        if operation is None:
            raise NotFound("operation", operation_id)
        return operation

    async def _open(self, request: OpenRequest, deadline: float | None) -> Operation:
        require(request.idempotency_key, "idempotency_key")
        require(request.reference, "reference")
        operation = await self._recorded(request)
        if operation.status is not OperationStatus.CREATED:
            return operation
        async with self._locks.hold(operation.operation_id) as waited:
            if waited:  # another request went first: start from what it left
                operation = await self._load(operation.operation_id)
            return await self._submit(operation, deadline)

    async def _recorded(self, request: OpenRequest) -> Operation:
        # A refund's check of its charge's total is made under the charge's lock, one refund
        # at a time: it stays on the single path.
        if self._writes is None or request.parent_operation_id is not None:
            return await retry_on_conflict(lambda: self._record(request))
        return await self._writes.record(request)

    async def _record(self, request: OpenRequest) -> Operation:
        """One request in a unit of work of its own (a refund, or a charge or payout whose
        batch could not commit). A taken key is a replay (or a concurrent twin, which the
        insert waited for): answered with the operation that holds it."""
        if request.parent_operation_id is not None:
            return await self._record_refund(request)
        operation = request.open()
        async with self._uow() as uow:
            # One statement, committed on its own: a new operation is all this unit writes.
            inserted, holders = await uow.record_new([operation])
        if inserted:
            return operation
        return replayed(_holder(holders.get(request.idempotency_key)), request)

    async def _record_refund(self, request: OpenRequest) -> Operation:
        async with self._uow() as uow:
            # A refund is checked against the charge's other refunds, which must not count a
            # replay of itself: look for it first.
            existing = await uow.operations.find_by_idempotency_key(request.idempotency_key)
            if existing is not None:
                return replayed(existing, request)
            await self._check_refund_total(uow, request)
            operation = request.open()
            if not await uow.operations.add_new(operation):
                holder = await uow.operations.find_by_idempotency_key(request.idempotency_key)
                return replayed(_holder(holder), request)
            await uow.commit()
            return operation

    @staticmethod
    async def _check_refund_total(uow: UnitOfWork, request: OpenRequest) -> None:
        assert request.parent_operation_id is not None
        # The charge's row lock orders concurrent refunds of one charge.
        charge = await uow.operations.get(request.parent_operation_id, for_update=True)
        if charge is None:
            raise NotFound("operation", request.parent_operation_id)
        refunded = await uow.operations.refunded_minor(charge.operation_id)
        if refunded + request.amount.amount_minor > charge.amount.amount_minor:
            raise FailedPrecondition(
                f"refunds of {charge.operation_id} would exceed the {charge.amount} charged"
            )

    async def _submit(self, operation: Operation, deadline: float | None) -> Operation:
        """Asks the providers in turn. A webhook or a sync may settle the operation while
        this runs: every change below is made under its row lock and refuses to go back."""
        if operation.status is not OperationStatus.CREATED:
            return operation  # settled meanwhile, e.g. by a webhook or a sync
        operation_id = operation.operation_id
        clear = operation.may_fail_over
        last: ProviderNotProcessed | None = None
        for provider in self._candidates(operation):
            if provider.name != operation.provider or operation.failover_clear:
                operation = await self.update(operation_id, _route(provider.name), known=operation)
                if operation.provider != provider.name or operation.failover_clear:
                    return operation  # a provider may have acted meanwhile: stay with it
            try:
                acceptance = await provider.submit(_instruction(operation), deadline=deadline)
            except ProviderRejected as exc:
                log.info("operation.rejected", operation_id=operation_id, code=exc.code)
                return await self.update(operation_id, _rejection(exc.code), known=operation)
            except ProviderNotProcessed as exc:
                log.warning("operation.not_processed", provider=provider.name, error=str(exc))
                last = exc
                continue
            except ProviderUnavailable as exc:
                # The provider may have acted: failing the operation could lose real money,
                # and asking another provider could move it twice. It waits for the answer.
                log.warning("operation.outcome_unknown", operation_id=operation_id, error=str(exc))
                return await self.update(operation_id, Operation.mark_unknown, known=operation)
            return await self.update(
                operation_id, _acceptance(acceptance.provider_reference), known=operation
            )
        if clear:
            # Only an asker that knew nothing was in flight learns that nothing is: a "not
            # processed" from a provider an earlier request may still be waiting on says
            # nothing of that request.
            await self.update(operation_id, Operation.mark_unsent, known=operation)
        raise DependencyUnavailable(
            f"no provider could take the {operation.kind.value} now (nothing was moved): {last}"
        )

    def _first_provider(self) -> str:
        return self._providers.in_order()[0].name

    def _candidates(self, operation: Operation) -> list[GuardedProvider]:
        if operation.kind is OperationKind.REFUND or not operation.may_fail_over:
            return [self._providers.get(operation.provider)]
        return self._providers.in_order()

    async def _load(self, operation_id: str) -> Operation:
        async with self._uow() as uow:
            operation = await uow.operations.get(operation_id)
        if operation is None:
            raise NotFound("operation", operation_id)
        return operation

    async def update(
        self, operation_id: str, change: Change, *, known: Operation | None = None
    ) -> Operation:
        """Applies `change` under the operation's row lock, saved when it returns truthy
        (service_layer/writes.py:update_operation), in the next group commit if on. With
        group commit, `known` (the operation as this request last saved it) lets a change
        that emits nothing be saved without the lock while the row is still at its version
        (GroupedWrites.update)."""
        if self._writes is None:
            return await update_operation(self._uow, operation_id, change)
        return await self._writes.update(operation_id, change, known=known)


def _check_refundable(charge: Operation, amount: Money) -> None:
    if charge.kind is not OperationKind.CHARGE:
        raise ValidationError(FieldViolation("charge_operation_id", "is not a charge"))
    if charge.status is not OperationStatus.SUCCEEDED or not charge.provider_reference:
        raise FailedPrecondition(f"charge {charge.operation_id} has not succeeded")
    if amount.currency != charge.amount.currency:
        raise ValidationError(FieldViolation("amount.currency", "must be the charge's currency"))


def _instruction(operation: Operation) -> Instruction:
    return Instruction(
        kind=InstructionKind(operation.kind.value),
        idempotency_key=operation.idempotency_key,
        amount=operation.amount,
        instrument=operation.instrument,
        reference=operation.operation_id,
    )


def _route(provider: str) -> Callable[[Operation], bool]:
    return lambda operation: operation.route_to(provider)


def _rejection(code: str) -> Callable[[Operation], bool]:
    return lambda operation: operation.mark_rejected(code or UNSPECIFIED_FAILURE)


def _acceptance(provider_reference: str) -> Callable[[Operation], bool]:
    def accept(operation: Operation) -> bool:
        changed = operation.mark_accepted(provider_reference)
        if not changed and operation.provider_reference not in (None, provider_reference):
            log.warning(
                "operation.provider_reference_mismatch",
                operation_id=operation.operation_id,
                stored=operation.provider_reference,
                answered=provider_reference,
            )
        return changed

    return accept


def _holder(holder: Operation | None) -> Operation:
    """The operation holding a key the insert found taken."""
    if holder is None:  # taken, then gone before the read: the whole request runs again
        raise ConcurrentUpdate("the operation with this key vanished")
    return holder

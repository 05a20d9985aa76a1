"""Gateway use cases: asking providers to move money, and hearing what they did.

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
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import structlog

from common import tracing
from common.aio import next_or_stop
from common.errors import (
    ConcurrentUpdate,
    DependencyUnavailable,
    FailedPrecondition,
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
from gateway_service.domain import events
from gateway_service.domain.model import (
    PROVIDER_EVENT_OUTCOMES,
    UNSPECIFIED_FAILURE,
    HistoryEntry,
    Operation,
    OperationKind,
    OperationStatus,
    ProviderEvent,
    ProviderEventStatus,
)
from gateway_service.domain.provider import (
    Instruction,
    InstructionKind,
    ProviderError,
    ProviderNotProcessed,
    ProviderRejected,
    ProviderUnavailable,
    ReportedStatus,
    StatusReport,
)
from gateway_service.service_layer.breaker import BreakerSnapshot, Transition
from gateway_service.service_layer.providers import GuardedProvider, ProviderRouter

log = structlog.get_logger(__name__)

# Providers commonly accept up to 255 characters for tokens and event ids.
MAX_PROVIDER_FIELD = 255
UNVERIFIED_WEBHOOK = "unverified_webhook"
NOT_PROCESSED = "not_processed_by_provider"


class OperationStore(Protocol):
    """Operations by id, idempotency key or provider reference. `for_update` locks the row
    until the unit of work ends; every change to an existing operation is made under it."""

    async def get(self, operation_id: str, *, for_update: bool = False) -> Operation | None: ...
    async def find_by_idempotency_key(self, idempotency_key: str) -> Operation | None: ...
    async def find_by_provider_reference(
        self, provider: str, provider_reference: str, *, for_update: bool = False
    ) -> Operation | None: ...
    async def lock_for_events(
        self, references: Sequence[tuple[str, str]], operation_ids: Sequence[str]
    ) -> list[Operation]:
        """The operations named by (provider, provider_reference) or id, locked in id order."""
        ...

    async def refunded_minor(self, charge_operation_id: str) -> int:
        """The amount of the charge's refunds that have not failed."""
        ...

    async def history(self, operation_id: str) -> list[HistoryEntry]: ...
    async def add(self, operation: Operation) -> None: ...
    async def add_new(self, operation: Operation) -> bool:
        """Adds the operation unless its idempotency key is taken (then False, no change)."""
        ...

    async def save(self, operation: Operation) -> None: ...


EventKey = tuple[str, str]  # (provider, provider_event_id)
EventRecord = tuple[ProviderEvent, str | None, ProviderEventStatus]


class ProviderEventStore(Protocol):
    async def recorded(self, keys: Sequence[EventKey]) -> dict[EventKey, str | None]:
        """Which of these events are already recorded, with the operation each matched."""
        ...

    async def record(self, records: Sequence[EventRecord]) -> set[EventKey]:
        """Records events with what became of them; returns the keys it inserted. A key that
        a concurrent transaction inserted waits for that one, and is then left out."""
        ...


class UnitOfWork(BaseUnitOfWork, Protocol):
    @property
    def operations(self) -> OperationStore: ...
    @property
    def provider_events(self) -> ProviderEventStore: ...


@dataclass(frozen=True, slots=True)
class ProviderEventReceipt:
    first_delivery: bool
    operation_id: str | None
    # None for a repeated delivery: that one changed nothing.
    status: ProviderEventStatus | None


@dataclass(frozen=True, slots=True)
class OpenRequest:
    kind: OperationKind
    idempotency_key: str
    amount: Money
    instrument: str
    reference: str
    parent_operation_id: str | None = None
    # Only the charge's provider can refund it.
    provider: str | None = None


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


Pending = tuple[ProviderEvent, "asyncio.Future[ProviderEventReceipt]"]


class _Inbox:
    """Coalesces concurrent provider events into one transaction each time round.

    While a batch is being recorded, new events queue; the next batch takes them all (up to
    `max_batch`). One commit, one lock statement and one insert then serve a whole batch, which
    is what lets the gateway record webhooks faster than one transaction per webhook allows.
    Each caller still gets its answer only after the commit that recorded its event.
    """

    def __init__(
        self,
        process: Callable[[list[ProviderEvent]], Awaitable[list[ProviderEventReceipt]]],
        *,
        max_batch: int = 256,
    ) -> None:
        self._process = process
        self._max_batch = max_batch
        self._queue: list[Pending] = []
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, event: ProviderEvent) -> ProviderEventReceipt:
        future: asyncio.Future[ProviderEventReceipt] = asyncio.get_running_loop().create_future()
        self._queue.append((event, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain(), name="gateway provider events")
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
            try:
                receipts = await self._process([event for event, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), receipt in zip(batch, receipts, strict=True):
                if not future.done():  # the caller may have given up (its deadline passed)
                    future.set_result(receipt)


class GatewayService:
    def __init__(
        self,
        *,
        uow: Callable[[], UnitOfWork],
        providers: ProviderRouter,
        sync_not_found_grace_s: float = 60.0,
    ) -> None:
        self._uow = uow
        self._providers = providers
        self._not_found_grace_s = sync_not_found_grace_s
        self._locks = _Locks()
        self._transitions: asyncio.Queue[Transition] = asyncio.Queue()
        self._inbox = _Inbox(self._record_batch)

    # -- money-moving requests ------------------------------------------------------------

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
            OperationKind.CHARGE, idempotency_key, amount, payment_method, reference
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
        request = OpenRequest(OperationKind.PAYOUT, idempotency_key, amount, destination, reference)
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
            OperationKind.REFUND,
            idempotency_key,
            amount,
            charge.provider_reference or "",
            reference,
            parent_operation_id=charge.operation_id,
            provider=charge.provider,
        )
        return await self._open(request, deadline)

    async def get_operation(self, operation_id: str) -> Operation:
        operation_id = parse_id(operation_id, "operation_id")
        async with self._uow() as uow:
            operation = await uow.operations.get(operation_id)
            if operation is not None:
                operation.history = await uow.operations.history(operation_id)
        if operation is None:
            raise NotFound("operation", operation_id)
        return operation

    # -- asking the provider --------------------------------------------------------------

    async def sync_operation(
        self, operation_id: str, *, trigger: str = "", deadline: float | None = None
    ) -> Operation:
        """Asks the operation's provider what became of it and applies the answer through the
        same state machine as a webhook. A terminal operation is not asked about again."""
        if trigger not in ("", UNVERIFIED_WEBHOOK):
            raise ValidationError(FieldViolation("trigger", f"unknown trigger {trigger!r}"))
        operation = await self.get_operation(operation_id)
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
        return await self._update(operation.operation_id, self._apply_report(report))

    def provider_status(self) -> list[tuple[int, BreakerSnapshot]]:
        return self._providers.status()

    # -- provider events ------------------------------------------------------------------

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
        operation_id: str = "",
        amount: Money | None = None,
    ) -> ProviderEventReceipt:
        """Records a provider event once and applies what it says; idempotent on
        (provider, provider_event_id). An event we cannot match is kept, never dropped."""
        event = ProviderEvent(
            provider=provider,
            provider_event_id=provider_event_id,
            event_type=event_type,
            provider_reference=provider_reference,
            failure_reason=failure_reason,
            occurred_at=occurred_at,
            raw_payload=raw_payload,
            operation_id=operation_id,
            amount=amount,
        )
        self._check_event(event)
        return await self._inbox.submit(event)

    async def handle_provider_events(
        self, batch: Sequence[ProviderEvent | ValidationError]
    ) -> list[ProviderEventReceipt | ValidationError]:
        """Several events at once, each as by handle_provider_event: an invalid one (or one
        the transport could not even convert) gets its ValidationError in its place, the
        others are recorded together. Raises when the valid ones could not be recorded."""
        invalid = [
            item if isinstance(item, ValidationError) else self._invalid(item) for item in batch
        ]
        valid = [
            item
            for item, error in zip(batch, invalid, strict=True)
            if error is None and isinstance(item, ProviderEvent)
        ]
        outcomes = await asyncio.gather(
            *(self._inbox.submit(event) for event in valid), return_exceptions=True
        )
        failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if failure is not None:
            raise failure
        receipts = iter(o for o in outcomes if isinstance(o, ProviderEventReceipt))
        return [error if error is not None else next(receipts) for error in invalid]

    def _check_event(self, event: ProviderEvent) -> None:
        require(event.provider, "provider")
        self._providers.get(event.provider)
        require(event.provider_event_id, "provider_event_id", max_length=MAX_PROVIDER_FIELD)
        require(event.event_type, "event_type")

    def _invalid(self, event: ProviderEvent) -> ValidationError | None:
        try:
            self._check_event(event)
        except ValidationError as exc:
            return exc
        return None

    # -- breaker transitions --------------------------------------------------------------

    def on_breaker_transition(self, transition: Transition) -> None:
        """Called by the breakers (synchronously); published by `publish_breaker_transitions`."""
        log.warning(
            "circuit_breaker.transition",
            provider=transition.name,
            from_state=transition.from_state.value,
            to_state=transition.to_state.value,
        )
        self._transitions.put_nowait(transition)

    async def publish_breaker_transitions(self, stop: asyncio.Event) -> None:
        """Runs for the life of the service: every breaker transition becomes an event."""
        sequence = 0
        while (transition := await next_or_stop(self._transitions, stop)) is not None:
            sequence += 1
            fact = _breaker_fact(transition, sequence)
            try:
                async with self._uow() as uow:
                    uow.track(events.Facts(fact))
                    await uow.commit()
            except Exception:
                # A breaker event is telemetry; losing one (the database is down, say) must
                # not stop the next from being published.
                log.exception("circuit_breaker.event_lost", provider=transition.name)

    # -- opening operations ---------------------------------------------------------------

    async def _open(self, request: OpenRequest, deadline: float | None) -> Operation:
        require(request.idempotency_key, "idempotency_key")
        require(request.reference, "reference")
        operation = await retry_on_conflict(lambda: self._record(request))
        if operation.status is not OperationStatus.CREATED:
            return operation
        async with self._locks.hold(operation.operation_id) as waited:
            if waited:  # another request went first: start from what it left
                operation = await self._load(operation.operation_id)
            return await self._submit(operation, deadline)

    async def _record(self, request: OpenRequest) -> Operation:
        async with self._uow() as uow:
            if request.parent_operation_id is not None:
                # A refund is checked against the charge's other refunds, which must not count
                # a replay of itself: look for it first.
                existing = await uow.operations.find_by_idempotency_key(request.idempotency_key)
                if existing is not None:
                    return _replayed(existing, request)
                await self._check_refund_total(uow, request)
            operation = Operation.open(
                kind=request.kind,
                idempotency_key=request.idempotency_key,
                amount=request.amount,
                instrument=request.instrument,
                reference=request.reference,
                provider=request.provider or self._providers.in_order()[0].name,
                parent_operation_id=request.parent_operation_id,
            )
            # Insert first: a new request (the common case) costs one statement. A taken key
            # is a replay (or a concurrent twin, which the insert waited for): answer with it.
            if not await uow.operations.add_new(operation):
                existing = await uow.operations.find_by_idempotency_key(request.idempotency_key)
                if existing is None:
                    raise ConcurrentUpdate("the operation with this key vanished")
                return _replayed(existing, request)
            uow.track(operation)
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
        last: ProviderNotProcessed | None = None
        for provider in self._candidates(operation):
            if provider.name != operation.provider:
                operation = await self._update(operation_id, _route(provider.name))
                if operation.provider != provider.name:
                    return operation  # a provider may have acted meanwhile: stay with it
            try:
                acceptance = await provider.submit(_instruction(operation), deadline=deadline)
            except ProviderRejected as exc:
                log.info("operation.rejected", operation_id=operation_id, code=exc.code)
                return await self._update(operation_id, _rejection(exc.code))
            except ProviderNotProcessed as exc:
                log.warning("operation.not_processed", provider=provider.name, error=str(exc))
                last = exc
                continue
            except ProviderUnavailable as exc:
                # The provider may have acted: failing the operation could lose real money,
                # and asking another provider could move it twice. It waits for the answer.
                log.warning("operation.outcome_unknown", operation_id=operation_id, error=str(exc))
                return await self._update(operation_id, Operation.mark_unknown)
            return await self._update(operation_id, _acceptance(acceptance.provider_reference))
        raise DependencyUnavailable(
            f"no provider could take the {operation.kind.value} now (nothing was moved): {last}"
        )

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

    async def _update(self, operation_id: str, change: Callable[[Operation], object]) -> Operation:
        """Applies `change` under the operation's row lock; saved when it returns truthy."""

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
            return outcome in _CHANGES_OPERATION

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
            uow.track(events.Facts(fact))
            await uow.commit()

    async def _record_batch(self, batch: list[ProviderEvent]) -> list[ProviderEventReceipt]:
        return await retry_on_conflict(lambda: self._record_batch_once(batch))

    async def _record_batch_once(self, batch: list[ProviderEvent]) -> list[ProviderEventReceipt]:
        """Records each event once and applies what it says, in arrival order, in one unit of
        work. Operations are locked before any event row is written, in id order, so batches
        of several replicas cannot deadlock; an event recorded meanwhile is a duplicate."""
        async with self._uow() as uow:
            operations = await uow.operations.lock_for_events(
                [(e.provider, e.provider_reference) for e in batch if e.provider_reference],
                [e.operation_id for e in batch if _is_uuid(e.operation_id)],
            )
            known = await uow.provider_events.recorded(
                [(e.provider, e.provider_event_id) for e in batch]
            )
            applied = _Application(operations, known)
            receipts = [applied.apply(event) for event in batch]
            inserted = await uow.provider_events.record(applied.records)
            lost = applied.keys() - inserted
            if any(applied.changed_by(key) for key in lost):
                # Recorded by another transaction meanwhile; ours must not apply it twice.
                raise ConcurrentUpdate("a provider event was recorded concurrently")
            for operation in applied.changed.values():
                uow.track(operation)
                await uow.operations.save(operation)
            uow.track(events.Facts(*applied.facts(inserted)))
            # One batch holds the webhooks of many flows: each operation's events continue
            # the trace of the webhook that changed it, not the batch's.
            with tracing.aggregate_traces(applied.traces()):
                await uow.commit()
        for event, matched, status in applied.outcomes:
            _log_provider_event(event, matched, status)
        return [
            _repeat_if_lost(receipt, key, lost)
            for receipt, key in zip(receipts, _keys(batch), strict=True)
        ]


_CHANGES_OPERATION = frozenset(
    {ProviderEventStatus.APPLIED, ProviderEventStatus.CONFLICT, ProviderEventStatus.MISMATCH}
)


def _keys(batch: list[ProviderEvent]) -> list[EventKey]:
    return [(event.provider, event.provider_event_id) for event in batch]


def _repeat_if_lost(
    receipt: ProviderEventReceipt, key: EventKey, lost: set[EventKey]
) -> ProviderEventReceipt:
    """A first delivery that another transaction recorded first is, in the end, a repeat."""
    if receipt.first_delivery and key in lost:
        return ProviderEventReceipt(False, receipt.operation_id, None)
    return receipt


class _Application:
    """Applies one batch of provider events to the operations they name, in memory, in order:
    a later event of the batch sees what an earlier one did."""

    def __init__(self, operations: list[Operation], known: dict[EventKey, str | None]) -> None:
        self._by_reference = {
            (op.provider, op.provider_reference): op for op in operations if op.provider_reference
        }
        self._by_id = {op.operation_id: op for op in operations}
        self._known = dict(known)
        self.records: list[EventRecord] = []
        self.changed: dict[str, Operation] = {}
        self.outcomes: list[tuple[ProviderEvent, Operation | None, ProviderEventStatus]] = []
        self._changing: set[EventKey] = set()

    def apply(self, event: ProviderEvent) -> ProviderEventReceipt:
        key = (event.provider, event.provider_event_id)
        if key in self._known:
            return ProviderEventReceipt(False, self._known[key], None)
        operation, status = self._outcome(event)
        operation_id = operation.operation_id if operation is not None else None
        self._known[key] = operation_id
        self.records.append((event, operation_id, status))
        self.outcomes.append((event, operation, status))
        if operation is not None and status in _CHANGES_OPERATION:
            self.changed[operation.operation_id] = operation
            self._changing.add(key)
        return ProviderEventReceipt(True, operation_id, status)

    def keys(self) -> set[EventKey]:
        return {(event.provider, event.provider_event_id) for event, _, _ in self.records}

    def traces(self) -> dict[str, tracing.Context]:
        return {
            operation.operation_id: tracing.extract(dict(event.trace_context))
            for event, operation, _ in self.outcomes
            if operation is not None and event.trace_context
        }

    def changed_by(self, key: EventKey) -> bool:
        return key in self._changing

    def facts(self, inserted: set[EventKey]) -> list[events.WebhookRecorded]:
        return [
            _received(event, operation_id, status)
            for event, operation_id, status in self.records
            if (event.provider, event.provider_event_id) in inserted
        ]

    def _outcome(self, event: ProviderEvent) -> tuple[Operation | None, ProviderEventStatus]:
        meaning = PROVIDER_EVENT_OUTCOMES.get(event.event_type)
        if meaning is None:
            return None, ProviderEventStatus.IGNORED
        operation = self._match(event)
        if operation is None:
            return None, ProviderEventStatus.UNMATCHED
        kind, status = meaning
        return operation, operation.apply_provider_report(
            kind=kind,
            status=status,
            failure_reason=event.failure_reason,
            provider_event_id=event.provider_event_id,
            provider_reference=event.provider_reference,
            amount=event.amount,
        )

    def _match(self, event: ProviderEvent) -> Operation | None:
        if event.provider_reference:
            operation = self._by_reference.get((event.provider, event.provider_reference))
            if operation is not None:
                return operation
        # The provider's event can overtake our commit of its answer to the request: the
        # operation is then still CREATED, without a provider reference. The provider echoes
        # our operation id (the adapter parsed it), and the row lock orders us against that
        # commit either way. A report naming an operation of another provider is not its own.
        operation = self._by_id.get(event.operation_id)
        if operation is None or operation.provider != event.provider:
            return None
        return operation


def _is_uuid(value: str) -> bool:
    try:
        parse_id(value, "operation_id")
    except ValidationError:
        return False
    return True


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


def _replayed(existing: Operation, request: OpenRequest) -> Operation:
    if not existing.same_request(
        kind=request.kind,
        amount=request.amount,
        instrument=request.instrument,
        reference=request.reference,
    ):
        raise IdempotencyConflict(
            f"idempotency_key {existing.idempotency_key!r} was already used for a different"
            " operation"
        )
    return existing


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


def _received(
    event: ProviderEvent, operation_id: str | None, status: ProviderEventStatus
) -> events.WebhookRecorded:
    return events.WebhookRecorded(
        provider=event.provider,
        provider_event_id=event.provider_event_id,
        event_type=event.event_type,
        operation_id=operation_id or "",
        outcome=status.value,
    )


def _breaker_fact(transition: Transition, sequence: int) -> events.CircuitBreakerStateChanged:
    return events.CircuitBreakerStateChanged(
        provider=transition.name,
        from_state=transition.from_state.value,
        to_state=transition.to_state.value,
        calls=transition.snapshot.calls,
        failures=transition.snapshot.failures,
        slow_calls=transition.snapshot.slow_calls,
        sequence=sequence,
    )


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
        # Kept in provider_events with this status (and its attention index): reconciliation
        # can still match it. Debug, so a flood of them is not a flood of rendered log lines.
        log.debug("provider_event.unmatched", **fields)
    elif status is ProviderEventStatus.MISMATCH:
        log.warning("provider_event.mismatch", **fields)
    elif status is ProviderEventStatus.CONFLICT:
        log.warning("provider_event.conflict", **fields)
    else:
        log.debug("provider_event.recorded", **fields)


def monotonic_deadline(seconds_left: float | None, *, margin_s: float = 0.1) -> float | None:
    """An absolute time.monotonic() deadline from a caller's remaining time, less a margin
    for recording the answer."""
    if seconds_left is None:
        return None
    return time.monotonic() + max(0.0, seconds_left - margin_s)

"""The provider-event inbox: what providers tell us (webhooks, forwarded by the webhook
adapter), recorded once each and applied to the operations they name.

Concurrent events are coalesced into one transaction per batch; an event we cannot match is
kept (as unmatched), never dropped, so reconciliation can still match it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog

from common import tracing
from common.errors import ConcurrentUpdate, ValidationError, require, retry_on_conflict
from common.ids import parse_id
from common.money import Money
from gateway_service.domain import events
from gateway_service.domain.model import (
    PROVIDER_EVENT_OUTCOMES,
    Operation,
    ProviderEvent,
    ProviderEventStatus,
)
from gateway_service.domain.provider import MAX_PROVIDER_FIELD
from gateway_service.service_layer.ports import EventKey, EventRecord, UnitOfWorkFactory
from gateway_service.service_layer.providers import ProviderRouter

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ProviderEventReceipt:
    first_delivery: bool
    operation_id: str | None
    # None for a repeated delivery: that one changed nothing.
    status: ProviderEventStatus | None


Pending = tuple[ProviderEvent, "asyncio.Future[ProviderEventReceipt]"]


class _Coalescer:
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


class ProviderEventInbox:
    def __init__(self, *, uow: UnitOfWorkFactory, providers: ProviderRouter) -> None:
        self._uow = uow
        self._providers = providers
        self._coalescer = _Coalescer(self._record_batch)

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
        return await self._coalescer.submit(event)

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
            *(self._coalescer.submit(event) for event in valid), return_exceptions=True
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

    async def _record_batch(self, batch: list[ProviderEvent]) -> list[ProviderEventReceipt]:
        # Nearly every event arrives once: the first attempt takes each for a first delivery
        # and reads nothing before its insert, whose ON CONFLICT says which were recorded
        # before. If one was, that attempt rolls back and the batch runs again reading what is
        # recorded first, so a repeat is answered as one and applies nothing.
        try:
            return await self._record_batch_once(batch, read_recorded=False)
        except ConcurrentUpdate:
            pass
        return await retry_on_conflict(lambda: self._record_batch_once(batch, read_recorded=True))

    async def _record_batch_once(
        self, batch: list[ProviderEvent], *, read_recorded: bool
    ) -> list[ProviderEventReceipt]:
        """Records each event once and applies what it says, in arrival order, in one unit of
        work. Operations are locked before any event row is written, in id order, so batches
        of several replicas cannot deadlock; an event recorded meanwhile is a duplicate.
        Without `read_recorded`, every event of the batch must be new: one recorded before
        raises ConcurrentUpdate, and nothing is kept."""
        async with self._uow() as uow:
            operations = await uow.operations.lock_for_events(
                [(e.provider, e.provider_reference) for e in batch if e.provider_reference],
                [e.operation_id for e in batch if _is_uuid(e.operation_id)],
            )
            known = (
                await uow.provider_events.recorded(
                    [(e.provider, e.provider_event_id) for e in batch]
                )
                if read_recorded
                else {}
            )
            applied = _Application(operations, known)
            receipts = [applied.apply(event) for event in batch]
            # The changed operations are saved in the events' statement: one round trip. An
            # event found recorded before rolls both back (the raises below).
            inserted = await uow.provider_events.record(
                applied.records, saving=list(applied.changed.values())
            )
            lost = applied.keys() - inserted
            if lost and not read_recorded:
                raise ConcurrentUpdate("a provider event of the batch was recorded before")
            if any(applied.changed_by(key) for key in lost):
                # Recorded by another transaction meanwhile; ours must not apply it twice.
                raise ConcurrentUpdate("a provider event was recorded concurrently")
            uow.publish(*applied.facts(inserted))
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
        if operation is not None and status.changes_operation:
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
        """`webhook.received` for the first deliveries that applied nothing (unmatched,
        ignored, stale, a duplicate outcome, a conflict or mismatch): a webhook that moved an
        operation is told by the operation's own event (`charge.succeeded`, with the provider
        event as its causation), and one event per webhook that nobody acts on cost a fifth
        of the gateway's CPU per webhook."""
        return [
            _received(event, operation_id, status)
            for event, operation_id, status in self.records
            if (event.provider, event.provider_event_id) in inserted
            and status is not ProviderEventStatus.APPLIED
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

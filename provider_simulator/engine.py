"""The simulated provider itself: operations, settlement, chaos and event bookkeeping.

Like a real PSP it answers `processing` at once and settles later, deduplicates on the
idempotency key, and reports outcomes by signed webhooks delivered at least once. The `Chaos`
knobs make it fail like one too: declines, 503s, requests taken but never answered, requests
lost before it saw them, outages, and webhooks dropped, duplicated, delayed or reordered.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Coroutine
from typing import Any

import structlog

from common import tracing
from provider_simulator.chaos import Chaos, Dice
from provider_simulator.delivery import WebhookSender
from provider_simulator.models import (
    DECLINE_REASON,
    DECLINING_DESTINATIONS,
    DECLINING_PAYMENT_METHODS,
    ID_PREFIX,
    Kind,
    Operation,
    WebhookEvent,
)
from provider_simulator.store import Store

log = structlog.get_logger(__name__)

TASK_NAME_PREFIX = "provider-simulator: "
# A request the chaos decided never to answer is held at most this long (or until shutdown).
UNANSWERED_HOLD_S = 600.0


class SimulatorError(Exception):
    """A request the provider refuses; `status` and `code` are what the API answers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        processed: bool = False,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.processed = processed
        self.field = field


class IdempotencyKeyReused(SimulatorError):
    def __init__(self) -> None:
        super().__init__(
            409,
            "idempotency_key_reused",
            "the idempotency key was already used with different parameters",
            field="idempotency_key",
        )


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class Simulator:
    def __init__(
        self, sender: WebhookSender, *, chaos: Chaos, seed: int | None, store: Store | None = None
    ) -> None:
        self._sender = sender
        self.chaos = chaos
        self._dice = Dice(seed)
        self._store = store or Store(None)
        self.operations, self.events = self._store.load()
        self._by_key = {(op.kind, op.idempotency_key): op for op in self.operations.values()}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()
        self._release = asyncio.Event()
        self.unanswered = 0
        self.dropped = 0

    @property
    def charges(self) -> dict[str, Operation]:
        return {k: op for k, op in self.operations.items() if op.kind == "charge"}

    def resume(self) -> None:
        """After a restart: settle what was pending, deliver what was not delivered."""
        self._store.open()
        pending = [op for op in self.operations.values() if op.status == "processing"]
        for operation in pending:
            self._spawn(self._settle(operation), f"settle {operation.id}")
        undelivered = [e for e in self.events.values() if e.state == "pending"]
        for event in undelivered:
            self._spawn(self._sender.deliver(event), f"deliver {event.id}")
        if pending or undelivered:
            log.info("simulator.resumed", pending=len(pending), undelivered=len(undelivered))

    def check_available(self) -> None:
        """Raises the 503 of an outage or of the error rate: the request is not processed."""
        if self.chaos.outage:
            raise SimulatorError(503, "outage", "the provider is down; nothing was processed")
        if self._dice.roll(self.chaos.error_rate):
            raise SimulatorError(503, "temporarily_unavailable", "try again; nothing was processed")

    def create(
        self,
        kind: Kind,
        idempotency_key: str,
        request: dict[str, Any],
        *,
        trace: dict[str, str] | None = None,
    ) -> tuple[Operation, bool]:
        """The operation for this request and whether it was newly created. No await in here,
        so concurrent requests with one key cannot both create."""
        existing = self._by_key.get((kind, idempotency_key))
        if existing is not None:
            if existing.request != request:
                raise IdempotencyKeyReused
            return existing, False
        if kind == "refund":
            self._check_refundable(request)
        operation = Operation(
            id=_new_id(ID_PREFIX[kind]),
            kind=kind,
            idempotency_key=idempotency_key,
            request=request,
            trace=trace or {},
        )
        self.operations[operation.id] = operation
        self._by_key[(kind, idempotency_key)] = operation
        self._store.save_operation(operation)
        # The payment method is deliberately not logged: real tokens are credentials.
        log.info("operation.created", id=operation.id, kind=kind, reference=request["reference"])
        self._spawn(self._settle(operation), f"settle {operation.id}")
        return operation, True

    def find(
        self, kind: Kind, *, operation_id: str = "", idempotency_key: str = ""
    ) -> Operation | None:
        operation = (
            self.operations.get(operation_id)
            if operation_id
            else self._by_key.get((kind, idempotency_key))
        )
        return operation if operation is not None and operation.kind == kind else None

    async def maybe_never_answer(self) -> None:
        """The chaos of a provider that took the request and never answers it."""
        if self._dice.roll(self.chaos.timeout_rate):
            await self._hold_unanswered()

    async def maybe_drop(self) -> None:
        """The chaos of a request lost before the provider saw it: nothing is recorded, the
        caller times out, and a lookup of its idempotency key finds no such operation."""
        if self._dice.roll(self.chaos.drop_rate):
            self.dropped += 1
            await self._hold_unanswered()

    async def _hold_unanswered(self) -> None:
        self.unanswered += 1
        try:
            async with asyncio.timeout(UNANSWERED_HOLD_S):
                await self._release.wait()
        except TimeoutError:
            pass
        raise SimulatorError(504, "never_answered", "this request was never going to be answered")

    def release_unanswered(self) -> None:
        self._release.set()

    def redeliver(self, event_id: str) -> WebhookEvent | None:
        event = self.events.get(event_id)
        if event is not None:
            log.info("webhook.redeliver", event_id=event.id)
            self._spawn(self._sender.deliver(event), f"redeliver {event.id}")
        return event

    async def close(self) -> None:
        """Cancel outstanding settlements and deliveries; the store resumes them on restart."""
        self._closing.set()
        self._release.set()
        if self._tasks:
            log.info("simulator.pausing_tasks", count=len(self._tasks))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._store.close()

    def _check_refundable(self, request: dict[str, Any]) -> None:
        charge = self.operations.get(request["charge"])
        if charge is None or charge.kind != "charge":
            raise SimulatorError(404, "charge_not_found", "no such charge")
        if charge.status != "succeeded":
            raise SimulatorError(422, "charge_not_captured", "the charge has not succeeded")
        refunded = sum(
            op.request["amount_minor"]
            for op in self.operations.values()
            if op.kind == "refund" and op.request["charge"] == charge.id and op.status != "failed"
        )
        if refunded + request["amount_minor"] > charge.request["amount_minor"]:
            raise SimulatorError(422, "amount_too_large", "refunds would exceed the charge")

    async def _settle(self, operation: Operation) -> None:
        # In the operation's trace even when resumed after a restart: its webhooks belong to
        # the flow that created it.
        with tracing.tracer().start_as_current_span(
            f"settle {operation.kind}", context=tracing.extract(operation.trace)
        ):
            await self._settle_now(operation)

    async def _settle_now(self, operation: Operation) -> None:
        await asyncio.sleep(self.chaos.settle_delay_ms / 1000)
        reason = self._decline_reason(operation)
        operation.status = "failed" if reason else "succeeded"
        operation.failure_reason = reason
        self._store.save_operation(operation)
        log.info("operation.settled", id=operation.id, status=operation.status, reason=reason)
        outcome = self._record_event(operation, f"{operation.kind}.{operation.status}")
        reordered = self._dice.roll(self.chaos.webhook_reorder_rate)
        earlier = (
            self._record_event(operation, f"{operation.kind}.processing") if reordered else None
        )
        await self._send(outcome)
        if earlier is not None:
            await self._send(earlier)

    def _decline_reason(self, operation: Operation) -> str | None:
        reason = DECLINING_PAYMENT_METHODS.get(
            operation.request.get("payment_method", "")
        ) or DECLINING_DESTINATIONS.get(operation.request.get("destination", ""))
        if reason is None and self._dice.roll(self.chaos.decline_rate):
            reason = DECLINE_REASON[operation.kind]
        return reason

    async def _send(self, event: WebhookEvent) -> None:
        if self._dice.roll(self.chaos.webhook_drop_rate):
            # Never sent, and never resent after a restart: a lost webhook, not a late one.
            event.state = "failed"
            self._store.save_event(event)
            log.info("webhook.dropped", event_id=event.id)
            return
        if self._dice.roll(self.chaos.webhook_delay_rate):
            await asyncio.sleep(self.chaos.webhook_delay_ms / 1000)
        if self._dice.roll(self.chaos.webhook_duplicate_rate):
            self._spawn(self._sender.deliver(event), f"duplicate {event.id}")
        await self._sender.deliver(event)

    def _record_event(self, operation: Operation, event_type: str) -> WebhookEvent:
        event_id = _new_id("evt")
        created = int(time.time())
        data = {**operation.to_json(), "status": event_type.rpartition(".")[2]}
        if operation.kind == "charge":
            data["charge_id"] = operation.id  # the field name of the charge-only API
        body = {"id": event_id, "type": event_type, "created": created, "data": data}
        event = WebhookEvent(
            id=event_id,
            type=event_type,
            operation_id=operation.id,
            body=json.dumps(body, separators=(",", ":")),
            created=created,
            trace=operation.trace,
        )
        self.events[event.id] = event
        self._store.save_event(event)
        return event

    def _spawn(self, work: Coroutine[Any, Any, None], label: str) -> None:
        if self._closing.is_set():
            work.close()  # never started; closing it avoids a "never awaited" warning
            return
        task = asyncio.create_task(self._guarded(work), name=f"{TASK_NAME_PREFIX}{label}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _guarded(work: Coroutine[Any, Any, None]) -> None:
        # A background failure must be logged now, not as "exception never retrieved" at exit.
        try:
            await work
        except Exception:
            log.exception("simulator.task_failed")

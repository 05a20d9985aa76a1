"""The simulated provider itself: charges, settlement and event bookkeeping, in memory."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Coroutine
from typing import Any

import structlog

from provider_simulator.delivery import WebhookSender
from provider_simulator.models import DECLINING_PAYMENT_METHODS, Charge, ChargeRequest, WebhookEvent

log = structlog.get_logger(__name__)

TASK_NAME_PREFIX = "provider-simulator: "


class IdempotencyKeyReused(Exception):
    """The idempotency key is already bound to a charge with different parameters."""


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class Simulator:
    def __init__(self, sender: WebhookSender, *, settle_delay_ms: int) -> None:
        self._sender = sender
        self._settle_delay = settle_delay_ms / 1000
        self.charges: dict[str, Charge] = {}
        self._by_idempotency_key: dict[str, Charge] = {}
        self.events: dict[str, WebhookEvent] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    def create_charge(self, request: ChargeRequest) -> tuple[Charge, bool]:
        """Return the charge for this request and whether it was newly created.

        There is no await in here, so concurrent requests with one key cannot both create.
        """
        existing = self._by_idempotency_key.get(request.idempotency_key)
        if existing is not None:
            if existing.request != request:
                raise IdempotencyKeyReused
            return existing, False
        charge = Charge(id=_new_id("ch"), request=request)
        self.charges[charge.id] = charge
        self._by_idempotency_key[request.idempotency_key] = charge
        # The payment method is deliberately not logged: real tokens are credentials.
        log.info(
            "charge.created",
            charge_id=charge.id,
            reference=request.reference,
            amount_minor=request.amount_minor,
            currency=request.currency,
        )
        self._spawn(self._settle(charge), f"settle {charge.id}")
        return charge, True

    def redeliver(self, event_id: str) -> WebhookEvent | None:
        event = self.events.get(event_id)
        if event is not None:
            log.info("webhook.redeliver", event_id=event.id)
            self._spawn(self._sender.deliver(event), f"redeliver {event.id}")
        return event

    async def close(self) -> None:
        """Cancel outstanding settlements and deliveries; the simulator keeps no promises."""
        self._closing = True
        if self._tasks:
            log.info("simulator.abandoning_tasks", count=len(self._tasks))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _settle(self, charge: Charge) -> None:
        await asyncio.sleep(self._settle_delay)
        reason = DECLINING_PAYMENT_METHODS.get(charge.request.payment_method)
        charge.status = "failed" if reason else "succeeded"
        charge.failure_reason = reason
        log.info("charge.settled", charge_id=charge.id, status=charge.status, failure_reason=reason)
        event = self._event_for(charge)
        self.events[event.id] = event
        await self._sender.deliver(event)

    @staticmethod
    def _event_for(charge: Charge) -> WebhookEvent:
        event_id = _new_id("evt")
        event_type = f"charge.{charge.status}"
        created = int(time.time())
        body = {
            "id": event_id,
            "type": event_type,
            "created": created,
            "data": {
                "charge_id": charge.id,
                "reference": charge.request.reference,
                "amount_minor": charge.request.amount_minor,
                "currency": charge.request.currency,
                "status": charge.status,
                "failure_reason": charge.failure_reason,
            },
        }
        return WebhookEvent(
            id=event_id,
            type=event_type,
            charge_id=charge.id,
            body=json.dumps(body, separators=(",", ":")),
            created=created,
        )

    def _spawn(self, work: Coroutine[Any, Any, None], label: str) -> None:
        if self._closing:
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

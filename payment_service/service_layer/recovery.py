"""Moving stuck payments on: the resume sweep (sagas stopped between two steps), the
request-path steps an outage interrupted, and the recovery worker's attempts (RecoverPayment),
which ask the provider again or run the saga's next step, each noted once in the audit
trail."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta

import structlog

from common.errors import (
    DependencyUnavailable,
    DomainError,
    FieldViolation,
    NotFound,
    ValidationError,
    require,
)
from common.ids import parse_id
from payment_service.domain.errors import ProviderOutcomeUnknown
from payment_service.domain.model import Payment
from payment_service.domain.recovery import (
    RecoveryAction,
    RecoveryOutcome,
    RecoveryRequest,
    RecoveryResult,
)
from payment_service.domain.trail import PaymentStep
from payment_service.service_layer.ports import GatewayPort, PaymentStore, UnitOfWork
from payment_service.service_layer.saga import Saga
from payment_service.service_layer.steps import Unchanged, step_with

log = structlog.get_logger(__name__)

DEFERRED_AT_ONCE = 16


@dataclass(frozen=True, slots=True)
class RecoveryRecord:
    """What an attempt of the recovery worker achieved, the payment after it, and the attempt's
    entry in the audit trail (None when there was nothing to do)."""

    outcome: RecoveryOutcome
    payment: Payment
    step: PaymentStep | None


def _recorded_outcome(step: PaymentStep) -> RecoveryOutcome:
    return RecoveryOutcome(step.data.get("outcome", RecoveryOutcome.UNKNOWN.value))


def _attempt_in(steps: list[PaymentStep], attempt_id: str) -> PaymentStep | None:
    """The recovery attempt `attempt_id` in a payment's audit trail, if it was noted."""
    return next(
        (
            s
            for s in steps
            if s.event_type.startswith("recovery.") and s.data.get("attempt_id") == attempt_id
        ),
        None,
    )


class Recovery:
    def __init__(self, *, uow: Callable[[], UnitOfWork], gateway: GatewayPort, saga: Saga) -> None:
        self._uow = uow
        self._gateway = gateway
        self._saga = saga

    async def resume_stalled(self, *, older_than: timedelta, limit: int = 100) -> int:
        """Picks up payments whose saga stopped between two steps (a process died, or an
        event was lost) and runs their next step again: every step is idempotent on its key,
        so a step that did run is not applied twice. Claimed with SKIP LOCKED and recorded
        as `saga.resumed`, so replicas never resume the same payment at once."""
        async with self._uow() as uow:
            stalled = await uow.payments.stalled(older_than=older_than, limit=limit)
            for payment_id in stalled:
                payment = await uow.payments.get(payment_id, for_update=True)
                if payment is None:
                    raise NotFound("payment", payment_id)
                payment.note_resumed()
                await uow.payments.save(payment)
            await uow.commit()
        for payment_id in stalled:
            try:
                await self._saga.resume(payment_id)
            except DomainError as exc:
                log.warning("payment.resume_deferred", payment_id=payment_id, error=exc.message)
        return len(stalled)

    async def resume_deferred(self) -> int:
        """Runs again the request-path steps an outage interrupted: one first, as a probe;
        if the outage is over, the rest, `DEFERRED_AT_ONCE` at a time (one that meets an
        outage again is deferred again). Returns how many are left."""
        deferred = self._saga.deferred
        if not deferred or not await self._resume_one(deferred.pop()):
            return len(deferred)
        waiting = deferred.take_all()
        room = asyncio.Semaphore(DEFERRED_AT_ONCE)

        async def resume(payment_id: str) -> None:
            async with room:
                await self._resume_one(payment_id)

        await asyncio.gather(*(resume(payment_id) for payment_id in waiting))
        return len(deferred)

    async def _resume_one(self, payment_id: str) -> bool:
        """False when an outage is still on (the payment is deferred again)."""
        try:
            await self._saga.resume(payment_id)
        except DependencyUnavailable:
            self._saga.deferred.add(payment_id)
            return False
        except DomainError as exc:
            log.warning("payment.resume_deferred", payment_id=payment_id, error=exc.message)
        return True

    async def recover(self, request: RecoveryRequest) -> RecoveryRecord:
        """The recovery worker's attempt to move a stuck payment on (`Payment.recovery_action`):
        asks the provider again about an operation it has not settled (the gateway applies
        the answer and emits its event, so the payment moves through its normal handlers), or
        runs the saga's next step again with the same keys. The attempt is noted in the audit
        trail once per `attempt_id`, with what it achieved; a repeat acts no more.

        Raises DependencyUnavailable when the gateway, the wallet or the provider cannot be
        reached: nothing was learned, so nothing is noted and the worker asks again."""
        request = replace(
            request,
            payment_id=parse_id(request.payment_id, "payment_id"),
            attempt_id=require(request.attempt_id, "attempt_id"),
            requested_by=require(request.requested_by, "requested_by"),
        )
        if request.rung < 0:
            raise ValidationError(FieldViolation("rung", "must not be negative"))
        async with self._uow() as uow:
            payment = await uow.payments.get(request.payment_id)
            if payment is None:
                raise NotFound("payment", request.payment_id)
            prior = _attempt_in(await uow.payments.steps(request.payment_id), request.attempt_id)
        planned = payment.recovery_action()
        if prior is not None or planned is None:
            outcome = _recorded_outcome(prior) if prior else RecoveryOutcome.NOT_STUCK
            return RecoveryRecord(outcome, payment, prior)
        action, operation_id = planned
        if action is RecoveryAction.SYNC:
            result = await self._sync(operation_id)
        else:
            result = await self._resume_step(payment.payment_id)
        return await self._record_recovery(request, action, result)

    async def _sync(self, operation_id: str) -> RecoveryResult:
        try:
            state = await self._gateway.sync_operation(operation_id)
        except DependencyUnavailable:
            raise
        except DomainError as exc:
            # The gateway refuses (an operation it does not know): a person has to look; the
            # attempt is noted with why, and asked again at the next rung.
            return RecoveryResult(RecoveryOutcome.UNKNOWN, operation_id, error=exc.message)
        outcome = RecoveryOutcome.SETTLED if state.settled else RecoveryOutcome.UNKNOWN
        return RecoveryResult(outcome, operation_id, state.answer)

    async def _resume_step(self, payment_id: str) -> RecoveryResult:
        try:
            await self._saga.resume(payment_id)
        except ProviderOutcomeUnknown:
            return RecoveryResult(RecoveryOutcome.UNKNOWN, answer="unknown")
        except DependencyUnavailable:
            raise
        except DomainError as exc:
            # The step ran and was refused (no funds for a hold, say): the payment took that
            # answer through its state machine; the attempt notes why.
            return RecoveryResult(RecoveryOutcome.RESUMED, error=exc.message)
        return RecoveryResult(RecoveryOutcome.RESUMED)

    async def _record_recovery(
        self, request: RecoveryRequest, action: RecoveryAction, result: RecoveryResult
    ) -> RecoveryRecord:
        """Notes the attempt under the payment's row lock: a twin of the same attempt that
        got here first has noted it, and this one notes nothing."""

        async def noted_before(store: PaymentStore, _: Payment) -> PaymentStep | None:
            return _attempt_in(await store.steps(request.payment_id), request.attempt_id)

        def note(
            current: Payment, prior: PaymentStep | None
        ) -> RecoveryRecord | Unchanged[RecoveryRecord]:
            if prior is not None:
                return Unchanged(RecoveryRecord(_recorded_outcome(prior), current, prior))
            noted = current.record_recovery(request, action, result)
            return RecoveryRecord(_recorded_outcome(noted), current, noted)

        record = await step_with(self._uow, request.payment_id, noted_before, note)
        log.info(
            "payment.recovery_attempted",
            payment_id=request.payment_id,
            action=action.value,
            rung=request.rung,
            outcome=record.outcome.value,
        )
        return record

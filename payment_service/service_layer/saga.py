"""The saga's steps after a payment was created. Each persists its recovery point before the
next call to another service, and every such call carries a key derived from the payment, so
a redelivered event or a resumed saga never applies a step twice.

The stream consumer of the payment's own events (`entrypoints/payment_events.py`) runs the
provider call (`ask_provider`: charge, payout or refund), a deposit's compensation refund
(`compensate`) and a cancelled payment's release (`release_hold`); the request path runs a
withdrawal's or refund's hold (`hold_funds`) and a transfer (`transfer`); `resume` runs
whichever is next from the recorded recovery point."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import structlog

from common.errors import DependencyUnavailable, DomainError, FailedPrecondition, NotFound
from common.faults import crash_point
from common.money import Money
from payment_service.domain.errors import ProviderOutcomeUnknown
from payment_service.domain.model import Payment
from payment_service.domain.provider_call import deposit_charge
from payment_service.domain.saga import ProviderAnswer, ProviderCall
from payment_service.domain.status import PaymentKind, PaymentStatus
from payment_service.service_layer.ports import GatewayPort, ProviderResult, UnitOfWork, WalletPort
from payment_service.service_layer.queries import PaymentQueries
from payment_service.service_layer.steps import Steps, Unchanged

log = structlog.get_logger(__name__)

# Request-path steps an outage interrupted that one process retries itself (`resume_deferred`).
MAX_DEFERRED = 10_000

# The events whose durable record starts the saga's next asynchronous step.
TRIGGERS = frozenset(
    {
        "payment.initiated",
        "payment.funds_held",
        "payment.refunding",
        "payment.compensation_retry",
        "payment.cancelled",
    }
)


def triggers_saga(event_type: str, kind: str) -> bool:
    """Whether the saga's consumer acts on this event, so that it is written to the saga's
    stream and to no other: a consumer group is delivered every entry of its stream, and on
    one stream with the rest the group acknowledged two events of a deposit's three unread.
    A withdrawal's, transfer's or refund's `payment.initiated` is not a trigger: their first
    step runs on the request path (the resume sweep covers a crash there)."""
    if event_type == "payment.initiated":
        return kind == PaymentKind.DEPOSIT
    return event_type in TRIGGERS


Begun = tuple[Payment, ProviderCall] | None


class Deferred:
    """Payments whose request-path step (hold, transfer) an outage interrupted: committed and
    initiated, so they move on once it is over (`Recovery.resume_deferred`), not at the resume
    sweep's threshold. In memory: a restart's start-up sweep covers them."""

    def __init__(self) -> None:
        self._ids: set[str] = set()

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, payment_id: str) -> None:
        if len(self._ids) < MAX_DEFERRED:  # beyond it, the resume sweep's
            self._ids.add(payment_id)

    def pop(self) -> str:
        return self._ids.pop()

    def take_all(self) -> list[str]:
        taken, self._ids = list(self._ids), set()
        return taken


def _begun(call: ProviderCall | None, payment: Payment) -> Begun | Unchanged[Begun]:
    """A provider call to make now, its recovery point recorded; or nothing to do."""
    return (payment, call) if call is not None else Unchanged(None)


class Saga:
    def __init__(
        self,
        *,
        uow: Callable[[], UnitOfWork],
        wallet: WalletPort,
        gateway: GatewayPort,
        queries: PaymentQueries,
        steps: Steps | None = None,
    ) -> None:
        # Shared with the gateway events' handlers (bootstrap), so their steps commit together.
        self._steps = steps or Steps(uow)
        self._wallet = wallet
        self._gateway = gateway
        self._queries = queries
        self.deferred = Deferred()

    # -- on the request path ----------------------------------------------------------------

    async def hold_funds(self, payment: Payment) -> Payment:
        """Holds a withdrawal's or refund's money (on the request path, and again when the
        saga resumes). A refusal fails the payment and is the key's stored response."""
        with self._deferred_on_outage(payment.payment_id):
            try:
                hold_id = await self._wallet.place_hold(
                    operation_ref=payment.step_ref("hold"),
                    account_id=payment.source_account_id,
                    amount=payment.amount,
                    reference=payment.payment_id,
                )
            except (FailedPrecondition, NotFound) as refusal:
                await self._reject(payment.payment_id, refusal)
                raise
            crash_point("payment.hold_placed")
            held = await self._answer(payment.payment_id, lambda p: p.record_hold(hold_id))
            if held.needs_hold_release():
                await self.release_hold(held.payment_id)
            return held

    async def transfer(self, payment: Payment) -> Payment:
        with self._deferred_on_outage(payment.payment_id):
            try:
                transaction_id = await self._wallet.transfer(
                    operation_ref=payment.step_ref("transfer"),
                    source_account_id=payment.source_account_id,
                    destination_account_id=payment.destination_account_id,
                    amount=payment.amount,
                    reference=payment.payment_id,
                )
            except (FailedPrecondition, NotFound) as refusal:
                await self._reject(payment.payment_id, refusal)
                raise
            crash_point("payment.transfer_moved")
            return await self._answer(
                payment.payment_id, lambda p: p.complete_transfer(transaction_id)
            )

    @contextlib.contextmanager
    def _deferred_on_outage(self, payment_id: str) -> Iterator[None]:
        """A request-path step the wallet's or the database's outage interrupted (before or
        after the wallet acted) is run again by `resume_deferred` once the outage is over."""
        try:
            yield
        except DependencyUnavailable:
            self.deferred.add(payment_id)
            raise

    async def _reject(self, payment_id: str, refusal: DomainError) -> None:
        await self._answer(
            payment_id, lambda p: p.reject(refusal.reason, refusal.message), refusal=refusal
        )
        log.info("payment.refused", payment_id=payment_id, reason=refusal.reason)

    async def _answer(
        self,
        payment_id: str,
        decide: Callable[[Payment], None],
        *,
        refusal: DomainError | None = None,
    ) -> Payment:
        """Records what the request path's wallet call did (`decide`) and, in the same
        transaction, stores the payment as it now stands (or the refusal) as its idempotency
        key's response."""

        def answered(payment: Payment) -> Payment:
            decide(payment)
            return payment

        return await self._steps.step(
            payment_id,
            answered,
            answer=(refusal.reason, refusal.message) if refusal else ("", ""),
        )

    # -- from the payment's own events ------------------------------------------------------

    async def ask_provider(self, payment_id: str) -> None:
        """Saga step, run from a durable event (`payment.funds_held` of a withdrawal or
        refund, a deposit's `payment.initiated` from an older version) or the resume sweep:
        records the recovery point (from then on the payment cannot be cancelled), asks the
        gateway to charge, pay out or refund with a key derived from the payment, then records
        what it said, unless the payment moved on meanwhile (a redelivery, or the provider's
        own event was faster). A declined withdrawal or refund releases its hold before it
        fails.

        Raises DependencyUnavailable while the gateway is unreachable or the provider's
        answer is unknown: the event stays pending and the step is retried with the same
        key, which the gateway and the provider deduplicate on.
        """
        begun = await self._steps.step(
            payment_id,
            lambda p: _begun(p.begin_provider_call(), p),
            missing=lambda: None,
        )
        if begun is None:
            return
        payment, call = begun
        release = (
            (payment.step_ref("release"), payment.saga.hold_id, payment.source_account_id)
            if payment.wants_release()
            else None
        )
        await self._ask(
            payment_id, call, known_operation=payment.gateway_operation_id, release=release
        )

    async def charge_deposit(self, payment_id: str, amount: Money, payment_method: str) -> None:
        """A deposit's charge, from its `payment.initiated`: the create recorded its recovery
        point, and the event carries what the call needs, so nothing is read or written before
        it. A redelivery asks again with the same key (the gateway answers what it has) and
        its answer changes nothing once the payment moved on."""
        await self._ask(payment_id, deposit_charge(payment_id, amount, payment_method))

    async def _ask(
        self,
        payment_id: str,
        call: ProviderCall,
        *,
        known_operation: str = "",
        release: tuple[str, str, str] | None = None,
    ) -> None:
        """Asks the provider and records its answer; a declined call first releases the hold
        `release` names (operation ref, hold id, its account: a withdrawal's or refund's)."""
        requested_at = datetime.now(UTC)
        result = await self._call_provider(payment_id, call)
        crash_point("payment.provider_answered")
        if result.answer is ProviderAnswer.UNKNOWN:
            if result.operation_id and result.operation_id != known_operation:
                await self._record_answer(payment_id, result, requested_at)
            raise ProviderOutcomeUnknown(
                f"provider outcome of {call.operation} {result.operation_id} unknown; asking again"
            )
        if result.answer is ProviderAnswer.DECLINED and release is not None:
            operation_ref, hold_id, account_id = release
            await self._wallet.release_hold(
                operation_ref=operation_ref, hold_id=hold_id, account_id=account_id
            )

        await self._record_answer(payment_id, result, requested_at)

    async def _record_answer(
        self, payment_id: str, result: ProviderResult, requested_at: datetime
    ) -> None:
        await self._steps.step(
            payment_id,
            lambda p: p.record_provider_answer(
                result.answer,
                operation_id=result.operation_id,
                reason=result.failure_reason,
                requested_at=requested_at,
            ),
            missing=lambda: None,
        )

    async def _call_provider(self, payment_id: str, call: ProviderCall) -> ProviderResult:
        if call.operation == "charge":
            return await self._gateway.charge(
                idempotency_key=call.idempotency_key,
                amount=call.amount,
                payment_method=call.payment_method,
                reference=payment_id,
            )
        if call.operation == "payout":
            return await self._gateway.payout(
                idempotency_key=call.idempotency_key,
                amount=call.amount,
                destination=call.destination,
                reference=payment_id,
            )
        return await self._gateway.refund(
            idempotency_key=call.idempotency_key,
            charge_operation_id=call.charge_operation_id,
            amount=call.amount,
            reference=payment_id,
        )

    async def compensate(self, payment_id: str) -> None:
        """A refunding deposit's refund attempt (from `payment.refunding`, then from each
        `payment.compensation_retry`), each attempt with its own provider key."""
        begun = await self._steps.step(
            payment_id,
            lambda p: _begun(p.compensation_call(), p),
            missing=lambda: None,
        )
        if begun is None:
            return
        _, call = begun
        result = await self._call_provider(payment_id, call)
        await self._steps.step(
            payment_id,
            lambda p: p.record_compensation_answer(
                result.answer, operation_id=result.operation_id, reason=result.failure_reason
            ),
        )
        if result.answer is ProviderAnswer.UNKNOWN:
            raise ProviderOutcomeUnknown(f"refund {result.operation_id} outcome unknown")

    async def release_hold(self, payment_id: str) -> None:
        """Gives a cancelled payment's held money back (from `payment.cancelled`)."""
        payment = await self._queries.get_payment(payment_id)
        if not payment.needs_hold_release():
            return
        await self._wallet.release_hold(
            operation_ref=payment.step_ref("release"),
            hold_id=payment.saga.hold_id,
            account_id=payment.source_account_id,
        )
        await self._steps.step(payment_id, lambda p: p.record_hold_released())

    # -- from the recorded recovery point ---------------------------------------------------

    async def resume(self, payment_id: str) -> None:
        """Runs the payment's next saga step from its recorded recovery point."""
        payment = await self._queries.get_payment(payment_id)
        if payment.status is PaymentStatus.REFUNDING:
            await self.compensate(payment_id)
        elif payment.status is not PaymentStatus.INITIATED:
            return
        elif payment.kind is PaymentKind.TRANSFER:
            await self.transfer(payment)
        elif payment.needs_hold():
            await self.hold_funds(payment)
        else:
            await self.ask_provider(payment_id)

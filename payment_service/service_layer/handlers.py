"""Reactions to facts from the gateway. Each loads the payment, lets it decide what the fact
means (`Payment.apply_*`), and saves it, recording the event id in the same transaction
(exactly-once effect over at-least-once delivery). Events arriving late, twice or out of order
never move a payment backwards; one that contradicts a final state asks for review.

A wallet call a fact needs (credit a deposit, capture or release a hold) runs between two
transactions, never inside one; its operation ref makes a repeated call harmless."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from common.errors import DependencyUnavailable, DomainError
from common.faults import crash_point
from payment_service.domain.model import Payment
from payment_service.domain.status import PaymentKind
from payment_service.service_layer.ports import UnitOfWork, WalletPort
from payment_service.service_layer.steps import Steps

log = structlog.get_logger(__name__)

CONSUMER = "payment-service"


class GatewayEventHandlers:
    def __init__(
        self, *, uow: Callable[[], UnitOfWork], wallet: WalletPort, steps: Steps | None = None
    ) -> None:
        self._steps = steps or Steps(uow)
        self._wallet = wallet

    async def charge_failed(
        self, *, event_id: str, payment_id: str, operation_id: str, reason: str
    ) -> None:
        await self._apply(
            event_id,
            payment_id,
            lambda p: p.apply_charge_failed(operation_id=operation_id, reason=reason),
        )

    async def charge_succeeded(self, *, event_id: str, payment_id: str, operation_id: str) -> None:
        # The credit is a call to another service, so it runs between two transactions, never
        # inside one; its operation ref makes a repeated credit harmless.
        payment = await self._peek(payment_id)
        if payment is None:
            return
        credited, refused = False, ""
        if payment.wants_credit_for_charge():
            refused = await self._credit(payment)
            credited = not refused
            crash_point("payment.credited")

        await self._apply(
            event_id,
            payment_id,
            lambda p: p.apply_charge_succeeded(
                operation_id=operation_id, credited=credited, credit_refused=refused
            ),
        )

    async def provider_succeeded(
        self, *, event_id: str, payment_id: str, operation: str, operation_id: str, provider: str
    ) -> None:
        """A payout or refund went through: the held money is taken for good (captured),
        then the payment completes. A deposit's compensation refund: refunded."""
        payment = await self._peek(payment_id)
        if payment is None:
            return
        captured, refused = False, ""
        if payment.wants_capture():
            try:
                await self._wallet.capture_hold(
                    operation_ref=payment.step_ref("capture"),
                    hold_id=payment.saga.hold_id,
                    account_id=payment.source_account_id,
                    provider=provider,
                )
                captured = True
                crash_point("payment.hold_captured")
            except DependencyUnavailable:
                raise
            except DomainError as exc:
                log.error("payment.capture_impossible", payment_id=payment_id, error=exc.message)
                refused = exc.message

        def apply(current: Payment) -> None:
            if current.kind is PaymentKind.DEPOSIT:
                current.apply_compensation_outcome(
                    succeeded=True, operation_id=operation_id, reason=""
                )
            elif refused:
                current.capture_refused(operation, refused)
            else:
                current.apply_provider_succeeded(
                    operation, operation_id=operation_id, provider=provider, captured=captured
                )

        await self._apply(event_id, payment_id, apply)

    async def provider_failed(
        self, *, event_id: str, payment_id: str, operation: str, operation_id: str, reason: str
    ) -> None:
        """A payout or refund was declined: the hold is released, then the payment fails. A
        deposit's compensation refund: tried again, or an operator looks."""
        payment = await self._peek(payment_id)
        if payment is None:
            return
        released = False
        if payment.wants_release():
            await self._wallet.release_hold(
                operation_ref=payment.step_ref("release"),
                hold_id=payment.saga.hold_id,
                account_id=payment.source_account_id,
            )
            released = True

        def apply(current: Payment) -> None:
            if current.kind is PaymentKind.DEPOSIT:
                current.apply_compensation_outcome(
                    succeeded=False, operation_id=operation_id, reason=reason
                )
            else:
                current.apply_provider_failed(
                    operation, operation_id=operation_id, reason=reason, released=released
                )

        await self._apply(event_id, payment_id, apply)

    async def provider_disputed(
        self, *, event_id: str, payment_id: str, provider_event: str, reason: str
    ) -> None:
        """The gateway recorded a provider report contradicting one of the payment's ended
        operations (`operation.conflict`) or disagreeing with it (`operation.mismatch`)."""
        await self._apply(
            event_id, payment_id, lambda p: p.note_provider_dispute(provider_event, reason)
        )

    async def _apply(
        self, event_id: str, payment_id: str, decide: Callable[[Payment], None]
    ) -> None:
        """A saga step reacting to the event: recorded as processed under the payment's lock,
        so a redelivery changes nothing."""
        await self._steps.react(
            payment_id, (CONSUMER, event_id), decide, missing=lambda: _unknown(payment_id)
        )

    async def _credit(self, payment: Payment) -> str:
        """Credits the wallet; returns why it can never be credited, or "" on success.

        The provider has the customer's money at this point, so a credit that can never
        succeed (account gone, currency changed, a limit) must lead to a refund, not to a
        silent failure. A wallet that is merely unavailable raises: the event is redelivered.
        """
        try:
            await self._wallet.credit(
                operation_ref=payment.step_ref("credit"),
                account_id=payment.destination_account_id,
                amount=payment.amount,
            )
        except DependencyUnavailable:
            raise
        except DomainError as exc:
            log.error("payment.credit_impossible", payment_id=payment.payment_id, error=str(exc))
            return f"wallet credit impossible: {exc.message}"
        return ""

    async def _peek(self, payment_id: str) -> Payment | None:
        payment = await self._steps.peek(payment_id)
        if payment is None:
            _unknown(payment_id)
        return payment


def _unknown(payment_id: str) -> None:
    log.warning("payment.event_for_unknown_payment", payment_id=payment_id)


__all__ = ["CONSUMER", "GatewayEventHandlers"]

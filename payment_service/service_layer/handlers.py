"""Reactions to facts from the gateway. Each records the event id in the same transaction as
its effect (exactly-once effect over at-least-once delivery), and tolerates events arriving
late, twice or out of order: an event that would move a payment backwards changes nothing."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from common.errors import DependencyUnavailable, DomainError
from payment_service.domain.model import Payment, PaymentStatus
from payment_service.service_layer.ports import UnitOfWork, WalletPort
from payment_service.service_layer.services import credit_ref

log = structlog.get_logger(__name__)

CONSUMER = "payment-service"


class GatewayEventHandlers:
    def __init__(self, *, uow: Callable[[], UnitOfWork], wallet: WalletPort) -> None:
        self._uow = uow
        self._wallet = wallet

    async def charge_failed(
        self, *, event_id: str, payment_id: str, operation_id: str, reason: str
    ) -> None:
        async with self._uow() as uow:
            payment = await self._locked(uow, payment_id)
            if payment is None or not await uow.payments.mark_processed(CONSUMER, event_id):
                return
            if payment.status is PaymentStatus.INITIATED:
                payment.mark_pending(operation_id)
            if payment.can_move_to(PaymentStatus.FAILED):
                payment.fail(reason or "charge_failed")
                await self._save(uow, payment)
            else:
                self._contradiction(payment, "charge.failed")
            await uow.commit()

    async def charge_succeeded(self, *, event_id: str, payment_id: str, operation_id: str) -> None:
        payment = await self._peek(payment_id)
        if payment is None or payment.status not in (
            PaymentStatus.INITIATED,
            PaymentStatus.PENDING,
        ):
            if payment is not None and payment.status in (
                PaymentStatus.FAILED,
                PaymentStatus.CANCELLED,
            ):
                self._contradiction(payment, "charge.succeeded")
            return
        refund_reason = await self._credit(payment)
        async with self._uow() as uow:
            current = await self._locked(uow, payment_id)
            if current is None or not await uow.payments.mark_processed(CONSUMER, event_id):
                return
            if current.status is PaymentStatus.INITIATED:
                current.mark_pending(operation_id)
            if current.status is PaymentStatus.PENDING:
                if refund_reason:
                    current.start_refund(refund_reason)
                else:
                    current.complete()
                await self._save(uow, current)
            await uow.commit()

    async def _credit(self, payment: Payment) -> str:
        """Credits the wallet; returns why it cannot ever be credited, or "" on success.

        The provider has the customer's money at this point, so a credit that can never
        succeed (account gone, currency changed) must lead to a refund, not to a silent
        failure. A wallet that is merely unavailable raises: the event is redelivered.
        """
        try:
            await self._wallet.credit(
                operation_ref=credit_ref(payment.payment_id),
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
        async with self._uow() as uow:
            payment = await uow.payments.get(payment_id)
        if payment is None:
            log.warning("payment.event_for_unknown_payment", payment_id=payment_id)
        return payment

    async def _locked(self, uow: UnitOfWork, payment_id: str) -> Payment | None:
        payment = await uow.payments.get(payment_id, for_update=True)
        if payment is None:
            log.warning("payment.event_for_unknown_payment", payment_id=payment_id)
        return payment

    async def _save(self, uow: UnitOfWork, payment: Payment) -> None:
        await uow.payments.save(payment)
        uow.track(payment)
        log.info("payment.status_changed", payment_id=payment.payment_id, status=payment.status)

    @staticmethod
    def _contradiction(payment: Payment, event_type: str) -> None:
        # A terminal state is never overwritten; manual review cases come with the recovery
        # worker. Logged at error level so it pages someone meanwhile.
        log.error(
            "payment.contradicting_provider_event",
            payment_id=payment.payment_id,
            status=payment.status,
            event_type=event_type,
        )


__all__ = ["CONSUMER", "GatewayEventHandlers"]

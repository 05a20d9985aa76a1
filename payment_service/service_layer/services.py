"""Payment use cases. The deposit saga persists each step before making the next call, and
every downstream call carries a key derived from the payment, so a retried request, a
redelivered event or a resumed saga never applies a step twice."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog

from common.errors import (
    DependencyUnavailable,
    FieldViolation,
    NotFound,
    ValidationError,
    require,
    retry_on_conflict,
)
from common.ids import parse_id
from common.money import Money
from payment_service.domain.model import (
    DepositRequest,
    Payment,
    PaymentStatus,
    StatusChange,
)
from payment_service.service_layer.ports import GatewayPort, UnitOfWork, WalletPort

log = structlog.get_logger(__name__)

DEFAULT_PAYMENT_METHOD = "pm_card_ok"


def charge_key(payment_id: str) -> str:
    return f"{payment_id}:charge"


def credit_ref(payment_id: str) -> str:
    return f"{payment_id}:credit"


@dataclass(frozen=True, slots=True)
class PaymentPage:
    payments: list[Payment]
    next_page_token: str


class PaymentService:
    def __init__(
        self, *, uow: Callable[[], UnitOfWork], wallet: WalletPort, gateway: GatewayPort
    ) -> None:
        self._uow = uow
        self._wallet = wallet
        self._gateway = gateway

    async def create_deposit(
        self, *, idempotency_key: str, account_id: str, amount: Money, payment_method: str
    ) -> Payment:
        request = DepositRequest(
            idempotency_key=require(idempotency_key, "idempotency_key"),
            account_id=parse_id(account_id, "account_id"),
            amount=amount,
            payment_method=require(payment_method or DEFAULT_PAYMENT_METHOD, "payment_method"),
        )
        payment = await self._find_by_key(request.idempotency_key)
        if payment is None:
            await self._check_account(request)
            payment = await retry_on_conflict(lambda: self._start_deposit(request))
        payment.check_same_deposit(request)
        if payment.status is PaymentStatus.INITIATED:
            payment = await self._charge(payment)
        return payment

    async def _find_by_key(self, key: str) -> Payment | None:
        async with self._uow() as uow:
            return await uow.payments.by_idempotency_key(key)

    async def _check_account(self, request: DepositRequest) -> None:
        account = await self._wallet.get_account(request.account_id)
        if account.currency != request.amount.currency:
            raise ValidationError(
                FieldViolation(
                    "amount.currency",
                    f"account {account.account_id} holds {account.currency}, "
                    f"not {request.amount.currency}",
                )
            )

    async def _start_deposit(self, request: DepositRequest) -> Payment:
        async with self._uow() as uow:
            existing = await uow.payments.by_idempotency_key(request.idempotency_key)
            if existing is not None:
                return existing
            payment = Payment.deposit(request)
            await uow.payments.add(payment)
            uow.track(payment)
            await uow.commit()
        log.info("payment.initiated", payment_id=payment.payment_id, kind="deposit")
        return payment

    async def _charge(self, payment: Payment) -> Payment:
        """Saga step: ask the gateway to charge, then record what it said.

        If the gateway cannot be reached the payment stays INITIATED: a retried
        CreateDeposit (same key) or the recovery worker resumes it from here.
        """
        try:
            result = await self._gateway.charge(
                idempotency_key=charge_key(payment.payment_id),
                amount=payment.amount,
                payment_method=payment.payment_method,
                reference=payment.payment_id,
            )
        except DependencyUnavailable as exc:
            log.warning("payment.charge_deferred", payment_id=payment.payment_id, error=str(exc))
            return payment

        async def record() -> Payment:
            async with self._uow() as uow:
                current = await uow.payments.get(payment.payment_id, for_update=True)
                if current is None:
                    raise NotFound("payment", payment.payment_id)
                if current.status is PaymentStatus.INITIATED:
                    if result.status == "failed":
                        current.fail(result.failure_reason or "charge_failed")
                    else:
                        current.mark_pending(result.operation_id)
                    await uow.payments.save(current)
                    uow.track(current)
                    await uow.commit()
                return current

        return await retry_on_conflict(record)

    async def get_payment(self, payment_id: str) -> Payment:
        payment_id = parse_id(payment_id, "payment_id")
        async with self._uow() as uow:
            payment = await uow.payments.get(payment_id)
        if payment is None:
            raise NotFound("payment", payment_id)
        return payment

    async def history(self, payment_id: str) -> list[StatusChange]:
        payment = await self.get_payment(payment_id)
        async with self._uow() as uow:
            return await uow.payments.history(payment.payment_id)

    async def list_payments(
        self, *, account_id: str, page_size: int, page_token: str
    ) -> PaymentPage:
        if account_id:
            account_id = parse_id(account_id, "account_id")
        size = page_size or 50
        if not 1 <= size <= 100:
            raise ValidationError(FieldViolation("page_size", "must be between 1 and 100"))
        try:
            before = int(page_token) if page_token else None
        except ValueError:
            raise ValidationError(FieldViolation("page_token", "is not a valid token")) from None
        async with self._uow() as uow:
            rows = await uow.payments.list(account_id=account_id, limit=size, before_seq=before)
        token = str(rows[-1][0]) if len(rows) == size else ""
        return PaymentPage([p for _, p in rows], token)

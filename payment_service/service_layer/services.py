"""Payment use cases. The deposit saga persists each step before making the next call, and
every downstream call carries a key derived from the payment, so a retried request, a
redelivered event or a resumed saga never applies a step twice."""

from __future__ import annotations

from collections import OrderedDict
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
from common.faults import crash_point
from common.ids import parse_id
from common.money import Money
from payment_service.domain.model import (
    ChargeAnswer,
    ChargeInstruction,
    DepositRequest,
    Payment,
    StatusChange,
)
from payment_service.service_layer.ports import GatewayPort, UnitOfWork, WalletPort

log = structlog.get_logger(__name__)

DEFAULT_PAYMENT_METHOD = "pm_card_ok"


def credit_ref(payment_id: str) -> str:
    return f"{payment_id}:credit"


@dataclass(frozen=True, slots=True)
class PaymentPage:
    payments: list[Payment]
    next_page_token: str


class AccountDirectory:
    """Account currencies, cached: an account's currency never changes, so after the first
    look-up CreateDeposit needs no call to the wallet on its request path. Only accounts that
    exist are cached; the cache is bounded (least recently used entries go first)."""

    def __init__(self, wallet: WalletPort, *, max_entries: int = 100_000) -> None:
        self._wallet = wallet
        self._max_entries = max_entries
        self._currencies: OrderedDict[str, str] = OrderedDict()

    async def currency_of(self, account_id: str) -> str:
        currency = self._currencies.get(account_id)
        if currency is None:
            currency = (await self._wallet.get_account(account_id)).currency
            self._currencies[account_id] = currency
            if len(self._currencies) > self._max_entries:
                self._currencies.popitem(last=False)
        else:
            self._currencies.move_to_end(account_id)
        return currency


class PaymentService:
    def __init__(
        self, *, uow: Callable[[], UnitOfWork], wallet: WalletPort, gateway: GatewayPort
    ) -> None:
        self._uow = uow
        self._accounts = AccountDirectory(wallet)
        self._gateway = gateway

    async def create_deposit(
        self, *, idempotency_key: str, account_id: str, amount: Money, payment_method: str
    ) -> Payment:
        """Records the deposit and answers: one transaction (payment, audit row, outbox row),
        no provider call. The charge runs asynchronously from the `payment.initiated` event
        (`charge_deposit`), so the caller gets `initiated` and a crash after the commit loses
        nothing."""
        request = DepositRequest(
            idempotency_key=require(idempotency_key, "idempotency_key"),
            account_id=parse_id(account_id, "account_id"),
            amount=amount,
            payment_method=require(payment_method or DEFAULT_PAYMENT_METHOD, "payment_method"),
        )
        await self._check_account(request)
        return await retry_on_conflict(lambda: self._start_deposit(request))

    async def _check_account(self, request: DepositRequest) -> None:
        currency = await self._accounts.currency_of(request.account_id)
        if currency != request.amount.currency:
            raise ValidationError(
                FieldViolation(
                    "amount.currency",
                    f"account {request.account_id} holds {currency}, not {request.amount.currency}",
                )
            )

    async def _start_deposit(self, request: DepositRequest) -> Payment:
        async with self._uow() as uow:
            existing = await uow.payments.by_idempotency_key(request.idempotency_key)
            if existing is not None:
                existing.check_same_deposit(request)
                return existing
            payment = Payment.deposit(request)
            # A concurrent request with the same key makes this insert a ConcurrentUpdate;
            # retry_on_conflict re-runs the unit of work, which then finds the winner's row.
            await uow.payments.add(payment)
            await uow.commit()
        crash_point("payment.deposit_committed")
        log.info("payment.initiated", payment_id=payment.payment_id, kind="deposit")
        return payment

    async def charge_deposit(self, charge: ChargeInstruction) -> None:
        """Saga step, run from the durable `payment.initiated` event (which carries the
        instruction, so no read comes first): ask the gateway to charge, then record what it
        said, unless the payment moved on meanwhile (a redelivery, or the gateway's own event
        was faster).

        Raises DependencyUnavailable while the gateway is unreachable or the provider's
        answer is unknown: the event stays pending and the step is retried with the same
        key, which the gateway and the provider deduplicate on.
        """
        result = await self._gateway.charge(
            idempotency_key=charge.idempotency_key,
            amount=charge.amount,
            payment_method=charge.payment_method,
            reference=charge.payment_id,
        )
        if result.answer is ChargeAnswer.UNKNOWN:
            raise DependencyUnavailable(
                f"provider outcome of charge {result.operation_id} unknown; asking again"
            )

        async def record() -> None:
            async with self._uow() as uow:
                payment = await uow.payments.get(charge.payment_id, for_update=True)
                if payment is None:
                    return
                payment.record_charge_answer(
                    result.answer, operation_id=result.operation_id, reason=result.failure_reason
                )
                await uow.payments.save(payment)
                await uow.commit()

        await retry_on_conflict(record)

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

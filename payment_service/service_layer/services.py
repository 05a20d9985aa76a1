"""Payment use cases. The deposit saga persists each step before making the next call, and
every downstream call carries a key derived from the payment, so a retried request, a
redelivered event or a resumed saga never applies a step twice."""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

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
    ANONYMOUS,
    ChargeAnswer,
    ChargeInstruction,
    DepositRequest,
    Payment,
    PaymentFilter,
    PaymentStep,
    StatusChange,
)
from payment_service.service_layer.ports import ChangeFeed, GatewayPort, UnitOfWork, WalletPort

log = structlog.get_logger(__name__)

WATCH_RECHECK_S = 5.0

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
        self,
        *,
        idempotency_key: str,
        account_id: str,
        amount: Money,
        payment_method: str,
        caller: str = ANONYMOUS,
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
            caller=caller or ANONYMOUS,
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
            payment = Payment.deposit(request)
            # The claim and the payment commit together. A concurrent request with the same
            # key waits on the claim's unique key for this transaction, then replays it.
            prior = await uow.payments.claim_key(request.claim(payment.payment_id))
            if prior is not None:
                prior.check_same_request(request.fingerprint)
                existing = await uow.payments.get(prior.payment_id)
                if existing is None:
                    raise NotFound("payment", prior.payment_id)
                return existing
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
        requested_at = datetime.now(UTC)
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
                    result.answer,
                    operation_id=result.operation_id,
                    reason=result.failure_reason,
                    requested_at=requested_at,
                )
                await uow.payments.save(payment)
                await uow.commit()

        await retry_on_conflict(record)

    async def watch(
        self, payment_id: str, *, feed: ChangeFeed, recheck_s: float = WATCH_RECHECK_S
    ) -> AsyncIterator[Payment]:
        """The payment now, then each later state it passes through, in order, until a
        terminal one.

        Subscribes before reading, so no change can fall between the two; on every wake-up
        (and at least every `recheck_s`, so a missed one only delays) it reads the status
        changes past the last one sent, so two changes in quick succession are both sent.
        """
        payment_id = parse_id(payment_id, "payment_id")
        async with feed.subscribe(payment_id) as changed:
            current = await self.get_payment(payment_id)
            yield current
            while not current.status.is_terminal:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=recheck_s)
                changed.clear()
                latest = await self.get_payment(payment_id)
                if latest.version <= current.version:
                    continue
                for change in await self._changes_after(payment_id, current.version):
                    current = latest.as_of(change)
                    yield current

    async def _changes_after(self, payment_id: str, version: int) -> list[StatusChange]:
        async with self._uow() as uow:
            history = await uow.payments.history(payment_id)
        return [change for change in history if change.sequence > version]

    async def purge_idempotency_keys(self, *, older_than: timedelta) -> int:
        """Forgets keys older than the retention, a batch at a time; returns how many. A key
        used again after that makes a new payment (as with Stripe's keys)."""
        purged = 0
        while True:
            async with self._uow() as uow:
                count = await uow.payments.purge_claims(older_than=older_than, limit=10_000)
                await uow.commit()
            purged += count
            if count < 10_000:
                return purged

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

    async def audit_trail(self, payment_id: str) -> list[PaymentStep]:
        payment = await self.get_payment(payment_id)
        async with self._uow() as uow:
            return await uow.payments.steps(payment.payment_id)

    async def list_payments(
        self,
        *,
        account_id: str,
        page_size: int,
        page_token: str,
        where: PaymentFilter | None = None,
    ) -> PaymentPage:
        if account_id:
            account_id = parse_id(account_id, "account_id")
        after, before_time = (where.created_after, where.created_before) if where else (None, None)
        if after and before_time and after >= before_time:
            raise ValidationError(
                FieldViolation("created_before", "must be later than created_after")
            )
        size = page_size or 50
        if not 1 <= size <= 100:
            raise ValidationError(FieldViolation("page_size", "must be between 1 and 100"))
        try:
            before = int(page_token) if page_token else None
        except ValueError:
            raise ValidationError(FieldViolation("page_token", "is not a valid token")) from None
        async with self._uow() as uow:
            rows = await uow.payments.list(
                account_id=account_id, limit=size, before_seq=before, where=where or PaymentFilter()
            )
        token = str(rows[-1][0]) if len(rows) == size else ""
        return PaymentPage([p for _, p in rows], token)

"""Reading payments: one payment, its status history and audit trail, an account's payments a
page at a time, and a watch that follows one payment to its end. Every read checks that the
caller may see the payment; a refusal reads the same whether or not the payment exists."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from common.auth import SYSTEM, Principal, denied
from common.errors import FieldViolation, NotFound, ValidationError
from common.ids import parse_id
from payment_service.domain.model import Payment
from payment_service.domain.requests import PaymentFilter
from payment_service.domain.trail import PaymentStep, StatusChange
from payment_service.service_layer.accounts import AccountDirectory, May
from payment_service.service_layer.ports import ChangeFeed, UnitOfWork

WATCH_RECHECK_S = 5.0


def page_params(page_size: int, page_token: str) -> tuple[int, int | None]:
    """A listing's page size (1-100, 50 when unset) and cursor (a sequence number)."""
    size = page_size or 50
    if not 1 <= size <= 100:
        raise ValidationError(FieldViolation("page_size", "must be between 1 and 100"))
    try:
        return size, int(page_token) if page_token else None
    except ValueError:
        raise ValidationError(FieldViolation("page_token", "is not a valid token")) from None


@dataclass(frozen=True, slots=True)
class PaymentPage:
    payments: list[Payment]
    next_page_token: str


class PaymentQueries:
    def __init__(self, *, uow: Callable[[], UnitOfWork], accounts: AccountDirectory) -> None:
        self._uow = uow
        self._accounts = accounts

    async def get_payment(
        self, payment_id: str, *, caller: Principal = SYSTEM, may: May = Principal.may_read
    ) -> Payment:
        """The payment, if the caller may read it (or do `may` with it). To a caller who
        may not, a payment that does not exist is refused alike (no probing of ids)."""
        payment_id = parse_id(payment_id, "payment_id")
        async with self._uow() as uow:
            payment = await uow.payments.get(payment_id)
        # `may` asked of no owner at all: what the caller's role allows, whoever the owner is.
        if may(caller, ""):
            if payment is None:
                raise NotFound("payment", payment_id)
            return payment
        if payment is None or not await self._accounts.allows(caller, payment, may):
            raise denied(
                "read this payment" if may is Principal.may_read else "act on this payment"
            )
        return payment

    async def authorize(self, caller: Principal, payment_id: str, may: May) -> None:
        """Refuses as `get_payment` does, without reading the payment for a caller whose role
        already allows it (the caller then reads it under its lock anyway)."""
        if not may(caller, ""):
            await self.get_payment(payment_id, caller=caller, may=may)

    async def history(self, payment_id: str, *, caller: Principal = SYSTEM) -> list[StatusChange]:
        payment = await self.get_payment(payment_id, caller=caller)
        async with self._uow() as uow:
            return await uow.payments.history(payment.payment_id)

    async def audit_trail(
        self, payment_id: str, *, caller: Principal = SYSTEM
    ) -> list[PaymentStep]:
        payment = await self.get_payment(payment_id, caller=caller)
        async with self._uow() as uow:
            return await uow.payments.steps(payment.payment_id)

    async def list_payments(
        self,
        *,
        account_id: str,
        page_size: int,
        page_token: str,
        where: PaymentFilter | None = None,
        caller: Principal = SYSTEM,
    ) -> PaymentPage:
        if account_id:
            account_id = parse_id(account_id, "account_id")
        if not account_id and not caller.is_operator:
            raise denied("list the payments of every account (name an account you own)")
        if account_id:
            await self._accounts.authorize(
                caller, account_id, "list this account's payments", may=Principal.may_read
            )
        after, before_time = (where.created_after, where.created_before) if where else (None, None)
        if after and before_time and after >= before_time:
            raise ValidationError(
                FieldViolation("created_before", "must be later than created_after")
            )
        size, before = page_params(page_size, page_token)
        async with self._uow() as uow:
            rows = await uow.payments.list(
                account_id=account_id, limit=size, before_seq=before, where=where or PaymentFilter()
            )
        token = str(rows[-1][0]) if len(rows) == size else ""
        return PaymentPage([p for _, p in rows], token)

    async def watch(
        self,
        payment_id: str,
        *,
        feed: ChangeFeed,
        caller: Principal = SYSTEM,
        recheck_s: float = WATCH_RECHECK_S,
    ) -> AsyncIterator[Payment]:
        """The payment now, then each later state it passes through, in order, until a
        terminal one.

        Subscribes before reading, so no change can fall between the two; on every wake-up
        (and at least every `recheck_s`, so a missed one only delays) it reads the status
        changes past the last one sent, so two changes in quick succession are both sent.
        """
        payment_id = parse_id(payment_id, "payment_id")
        async with feed.subscribe(payment_id) as changed:
            current = await self.get_payment(payment_id, caller=caller)
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

"""Holds: place one, capture it (a posting against the provider's clearing), release it, read
it, and the sweep that expires the overdue ones."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from common.auth import SYSTEM, Principal, denied
from common.errors import FieldViolation, ValidationError, require, retry_on_conflict
from common.ids import new_id, parse_id
from common.money import Money
from wallet_service.domain import postings
from wallet_service.domain.account import Account
from wallet_service.domain.errors import AccountNotFound, HoldNotFound
from wallet_service.domain.holds import HoldStatus, HoldView
from wallet_service.domain.ledger import LedgerTransaction, SystemAccount
from wallet_service.service_layer.accounts import Accounts
from wallet_service.service_layer.mutations import (
    Mutation,
    fingerprint,
    money_part,
    replay_transaction,
)
from wallet_service.service_layer.ports import UnitOfWork

DEFAULT_HOLD_TTL = timedelta(days=7)


def hold_to_json(view: HoldView) -> dict[str, Any]:
    return {
        "hold_id": view.hold_id,
        "account_id": view.account_id,
        "amount_minor": view.amount.amount_minor,
        "captured_minor": view.captured.amount_minor,
        "currency": view.amount.currency,
        "status": view.status.value,
        "expires_at": view.expires_at.isoformat(),
        "reference": view.reference,
    }


T = TypeVar("T")


def hold_from_json(data: dict[str, Any]) -> HoldView:
    return HoldView(
        hold_id=data["hold_id"],
        account_id=data["account_id"],
        amount=Money(data["amount_minor"], data["currency"]),
        captured=Money(data["captured_minor"], data["currency"]),
        status=HoldStatus(data["status"]),
        expires_at=datetime.fromisoformat(data["expires_at"]),
        reference=data["reference"],
    )


class _NotOnAccount(HoldNotFound):
    """The caller named an account on which the hold is not open: the capture or release is
    then answered as if no account had been named (the hold read first)."""


async def _replay_hold(uow: UnitOfWork, stored: dict[str, Any]) -> HoldView:
    return hold_from_json(stored["hold"])


class Holds(Accounts):
    async def place_hold(
        self,
        *,
        operation_ref: str,
        account_id: str,
        amount: Money,
        expires_at: datetime | None = None,
        reference: str = "",
    ) -> HoldView:
        require(operation_ref, "operation_ref")
        account_id = parse_id(account_id, "account_id")
        now = self._clock()
        if expires_at is not None and expires_at <= now:
            raise ValidationError(FieldViolation("expires_at", "must be in the future"))
        until = expires_at or now + DEFAULT_HOLD_TTL

        async def act(
            uow: UnitOfWork, accounts: dict[str, Account]
        ) -> tuple[HoldView, dict[str, Any]]:
            hold_id = new_id()
            accounts[account_id].place_hold(
                hold_id=hold_id,
                amount=amount,
                expires_at=until,
                reference=reference,
                operation_ref=operation_ref,
                limits=self._limits,
            )
            view = HoldView(
                hold_id,
                account_id,
                amount,
                Money(0, amount.currency),
                HoldStatus.OPEN,
                until,
                reference,
            )
            return view, {"hold": hold_to_json(view)}

        return await self._operate(
            Mutation(
                operation_ref,
                "place_hold",
                fingerprint(
                    account_id,
                    money_part(amount),
                    expires_at.isoformat() if expires_at else "-",
                    reference,
                ),
                [account_id],
                act,
                _replay_hold,
            )
        )

    async def capture_hold(
        self,
        *,
        operation_ref: str,
        hold_id: str,
        amount: Money | None = None,
        provider: str = "",
        account_id: str = "",
    ) -> LedgerTransaction:
        require(operation_ref, "operation_ref")
        capture = functools.partial(self._capture, operation_ref, amount=amount, provider=provider)
        return await self._on_hold_account(hold_id, account_id, capture)

    async def release_hold(
        self, *, operation_ref: str, hold_id: str, account_id: str = ""
    ) -> HoldView:
        require(operation_ref, "operation_ref")
        release = functools.partial(self._release, operation_ref)
        return await self._on_hold_account(hold_id, account_id, release)

    async def _on_hold_account(
        self, hold_id: str, account_id: str, run: Callable[[str, str, bool], Awaitable[T]]
    ) -> T:
        """Runs `run(hold_id, account_id, named)` on the hold's account. A caller that knows
        it (the payment service does: the withdrawal's source) names it, and the account is
        locked at once instead of the hold being read first: one statement and one
        transaction less. A hold not open on a named account, or no account named, is
        decided on the account a read of the hold names: the same answers either way."""
        if account_id:
            with contextlib.suppress(_NotOnAccount, AccountNotFound):
                return await run(
                    parse_id(hold_id, "hold_id"), parse_id(account_id, "account_id"), True
                )
        hold = await self.get_hold(hold_id)
        return await run(hold.hold_id, hold.account_id, False)

    async def _capture(
        self,
        operation_ref: str,
        hold_id: str,
        account_id: str,
        named: bool,
        *,
        amount: Money | None,
        provider: str,
    ) -> LedgerTransaction:
        """`named`: the account is the caller's word, not read from the hold, so a hold not
        open on it is `_NotOnAccount` (answered by the read) rather than refused here."""

        async def act(
            uow: UnitOfWork, accounts: dict[str, Account]
        ) -> tuple[LedgerTransaction, dict[str, Any]]:
            account = accounts[account_id]
            if named and hold_id not in account.holds:
                raise _NotOnAccount(hold_id)
            txn = postings.capture(
                account,
                hold_id,
                amount,
                operation_ref=operation_ref,
                now=self._clock(),
                provider=provider,
            )
            await uow.accounts.ensure_system([SystemAccount.clearing(account.currency, provider)])
            await uow.accounts.add_transaction(txn)
            return txn, {"transaction_id": txn.transaction_id}

        return await self._operate(
            Mutation(
                operation_ref,
                "capture_hold",
                fingerprint(hold_id, money_part(amount), provider),
                [account_id],
                act,
                replay_transaction,
            )
        )

    async def _release(
        self, operation_ref: str, hold_id: str, account_id: str, named: bool
    ) -> HoldView:
        """`named`: as for `_capture`. The released hold's view is taken from the locked
        account, where an open hold is."""

        async def act(
            uow: UnitOfWork, accounts: dict[str, Account]
        ) -> tuple[HoldView, dict[str, Any]]:
            account = accounts[account_id]
            held = account.holds.get(hold_id)
            if named and held is None:
                raise _NotOnAccount(hold_id)
            account.release_hold(hold_id, operation_ref)  # HoldNotOpen unless it is open
            assert held is not None
            view = HoldView(
                hold_id,
                account_id,
                Money(held.amount_minor, account.currency),
                Money(0, account.currency),  # an open hold has captured nothing
                HoldStatus.RELEASED,
                held.expires_at,
                held.reference,
            )
            return view, {"hold": hold_to_json(view)}

        return await self._operate(
            Mutation(
                operation_ref,
                "release_hold",
                hold_id,
                [account_id],
                act,
                _replay_hold,
            )
        )

    async def get_hold(self, hold_id: str, *, caller: Principal = SYSTEM) -> HoldView:
        hold_id = parse_id(hold_id, "hold_id")
        async with self._reader() as uow:
            hold = await uow.accounts.find_hold(hold_id)
            # A read ends with COMMIT: on ROLLBACK psycopg drops the connection's prepared
            # statements (this read ran before every capture and release: one ROLLBACK and
            # its re-parses per withdrawal).
            await uow.commit()
        if caller.is_operator:
            if hold is None:
                raise HoldNotFound(hold_id)
            return hold
        if hold is None:
            raise denied("read this hold")
        await self.get_account(hold.account_id, caller=caller)
        return hold

    async def expire_holds(self, *, limit: int = 100) -> list[str]:
        """Releases every hold past its expiry, one account per transaction. Safe to run on
        several replicas at once: each account is re-checked under its lock."""
        now = self._clock()
        async with self._uow() as uow:
            account_ids = await uow.accounts.accounts_with_expired_holds(now, limit=limit)
        expired: list[str] = []
        for account_id in account_ids:
            expired += await retry_on_conflict(
                functools.partial(self._expire, account_id, now), attempts=self._attempts
            )
        return expired

    async def _expire(self, account_id: str, now: datetime) -> list[str]:
        async with self._uow() as uow:
            accounts, _ = await uow.accounts.lock([account_id])
            account = accounts.get(account_id)
            if account is None:
                return []
            expired = account.expire_holds(now)
            await uow.accounts.save([account])
            await uow.commit()
            return expired

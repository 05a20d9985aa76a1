"""What the payment service needs from the outside, as small Protocols (fakes in unit tests)."""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from common.money import Money
from common.uow import UnitOfWork as BaseUnitOfWork
from payment_service.domain.model import (
    ChargeAnswer,
    IdempotencyClaim,
    Payment,
    PaymentFilter,
    PaymentStep,
    StatusChange,
)


@dataclass(frozen=True, slots=True)
class AccountInfo:
    account_id: str
    currency: str


@dataclass(frozen=True, slots=True)
class ChargeResult:
    operation_id: str
    answer: ChargeAnswer
    failure_reason: str = ""


class ChangeFeed(Protocol):
    def subscribe(self, payment_id: str) -> AbstractAsyncContextManager[asyncio.Event]:
        """An event set whenever the payment may have changed; the watcher clears it."""
        ...


class WalletPort(Protocol):
    async def get_account(self, account_id: str) -> AccountInfo: ...
    async def credit(self, *, operation_ref: str, account_id: str, amount: Money) -> None: ...


class GatewayPort(Protocol):
    async def charge(
        self, *, idempotency_key: str, amount: Money, payment_method: str, reference: str
    ) -> ChargeResult: ...


class PaymentStore(Protocol):
    async def get(self, payment_id: str, *, for_update: bool = False) -> Payment | None: ...
    async def claim_key(self, claim: IdempotencyClaim) -> IdempotencyClaim | None:
        """Records the claim, or returns the earlier claim of the same caller and key. A
        concurrent claim of the same key waits for the first one's transaction to end."""
        ...

    async def purge_claims(self, *, older_than: timedelta, limit: int) -> int: ...

    async def add(self, payment: Payment) -> None: ...
    async def save(self, payment: Payment) -> None: ...
    async def history(self, payment_id: str) -> list[StatusChange]: ...
    async def steps(self, payment_id: str) -> list[PaymentStep]: ...
    async def list(
        self, *, account_id: str, limit: int, before_seq: int | None, where: PaymentFilter
    ) -> list[tuple[int, Payment]]: ...
    async def mark_processed(self, consumer: str, event_id: str) -> bool: ...


class UnitOfWork(BaseUnitOfWork, Protocol):
    @property
    def payments(self) -> PaymentStore: ...

"""What the payment service needs from the outside, as small Protocols (fakes in unit tests)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from common.money import Money
from common.uow import UnitOfWork as BaseUnitOfWork
from payment_service.domain.model import ChargeAnswer, Payment, StatusChange


@dataclass(frozen=True, slots=True)
class AccountInfo:
    account_id: str
    currency: str


@dataclass(frozen=True, slots=True)
class ChargeResult:
    operation_id: str
    answer: ChargeAnswer
    failure_reason: str = ""


class WalletPort(Protocol):
    async def get_account(self, account_id: str) -> AccountInfo: ...
    async def credit(self, *, operation_ref: str, account_id: str, amount: Money) -> None: ...


class GatewayPort(Protocol):
    async def charge(
        self, *, idempotency_key: str, amount: Money, payment_method: str, reference: str
    ) -> ChargeResult: ...


class PaymentStore(Protocol):
    async def get(self, payment_id: str, *, for_update: bool = False) -> Payment | None: ...
    async def by_idempotency_key(self, key: str) -> Payment | None: ...
    async def add(self, payment: Payment) -> None: ...
    async def save(self, payment: Payment) -> None: ...
    async def history(self, payment_id: str) -> list[StatusChange]: ...
    async def list(
        self, *, account_id: str, limit: int, before_seq: int | None
    ) -> list[tuple[int, Payment]]: ...
    async def mark_processed(self, consumer: str, event_id: str) -> bool: ...


class UnitOfWork(BaseUnitOfWork, Protocol):
    @property
    def payments(self) -> PaymentStore: ...

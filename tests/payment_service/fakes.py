"""Small in-memory fakes of the payment service's ports, for service-layer unit tests."""

from __future__ import annotations

import copy
from collections.abc import Callable
from types import TracebackType
from typing import Self

from common.errors import DependencyUnavailable, NotFound
from common.money import Money
from payment_service.domain.model import ChargeAnswer, Payment, StatusChange
from payment_service.service_layer.ports import AccountInfo, ChargeResult


class FakeStore:
    """The rows, shared by every unit of work; each sees them through a TrackingStore."""

    def __init__(self) -> None:
        self.rows: dict[str, Payment] = {}
        self.history_rows: dict[str, list[StatusChange]] = {}
        self.processed: set[tuple[str, str]] = set()

    async def get(self, payment_id: str, *, for_update: bool = False) -> Payment | None:
        row = self.rows.get(payment_id)
        return copy.deepcopy(row) if row else None

    async def by_idempotency_key(self, key: str) -> Payment | None:
        found = [p for p in self.rows.values() if p.idempotency_key == key]
        return copy.deepcopy(found[0]) if found else None

    async def add(self, payment: Payment) -> None:
        await self.save(payment)

    async def save(self, payment: Payment) -> None:
        self.history_rows.setdefault(payment.payment_id, []).extend(payment.new_changes)
        payment.new_changes = []
        stored = copy.deepcopy(payment)
        stored._events = []
        self.rows[payment.payment_id] = stored

    async def history(self, payment_id: str) -> list[StatusChange]:
        return list(self.history_rows.get(payment_id, []))

    async def list(
        self, *, account_id: str, limit: int, before_seq: int | None
    ) -> list[tuple[int, Payment]]:
        return [(i, p) for i, p in enumerate(self.rows.values())][:limit]

    async def mark_processed(self, consumer: str, event_id: str) -> bool:
        if (consumer, event_id) in self.processed:
            return False
        self.processed.add((consumer, event_id))
        return True


class TrackingStore:
    """Registers what it hands out with its unit of work, as the SQL repository does."""

    def __init__(self, store: FakeStore, track: Callable[[Payment], None]) -> None:
        self._store = store
        self._track = track

    async def get(self, payment_id: str, *, for_update: bool = False) -> Payment | None:
        return self._seen(await self._store.get(payment_id))

    async def by_idempotency_key(self, key: str) -> Payment | None:
        return self._seen(await self._store.by_idempotency_key(key))

    def _seen(self, payment: Payment | None) -> Payment | None:
        if payment is not None:
            self._track(payment)
        return payment

    async def add(self, payment: Payment) -> None:
        self._track(payment)
        await self._store.add(payment)

    async def save(self, payment: Payment) -> None:
        await self._store.save(payment)

    async def history(self, payment_id: str) -> list[StatusChange]:
        return await self._store.history(payment_id)

    async def list(
        self, *, account_id: str, limit: int, before_seq: int | None
    ) -> list[tuple[int, Payment]]:
        return await self._store.list(account_id=account_id, limit=limit, before_seq=before_seq)

    async def mark_processed(self, consumer: str, event_id: str) -> bool:
        return await self._store.mark_processed(consumer, event_id)


class FakeUnitOfWork:
    def __init__(self, store: FakeStore, published: list[object]) -> None:
        self.payments = TrackingStore(store, self.track)
        self._published = published
        self._tracked: list[Payment] = []

    async def __aenter__(self) -> Self:
        self._tracked = []
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def track(self, aggregate: Payment) -> None:
        self._tracked.append(aggregate)

    async def commit(self) -> None:
        for aggregate in self._tracked:
            self._published.extend(aggregate.pull_events())


class FakeWallet:
    def __init__(self) -> None:
        self.accounts: dict[str, str] = {}
        self.credits: dict[str, tuple[str, Money]] = {}
        self.unavailable = False
        self.lookups = 0

    async def get_account(self, account_id: str) -> AccountInfo:
        self.lookups += 1
        if account_id not in self.accounts:
            raise NotFound("account", account_id)
        return AccountInfo(account_id, self.accounts[account_id])

    async def credit(self, *, operation_ref: str, account_id: str, amount: Money) -> None:
        if self.unavailable:
            raise DependencyUnavailable("wallet down")
        if account_id not in self.accounts:
            raise NotFound("account", account_id)
        self.credits.setdefault(operation_ref, (account_id, amount))


class FakeGateway:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.unavailable = False
        self.answer = ChargeAnswer.ACCEPTED

    async def charge(
        self, *, idempotency_key: str, amount: Money, payment_method: str, reference: str
    ) -> ChargeResult:
        if self.unavailable:
            raise DependencyUnavailable("gateway down")
        self.calls.append(idempotency_key)
        reason = "card_declined" if self.answer is ChargeAnswer.DECLINED else ""
        return ChargeResult(f"op-{reference}", self.answer, reason)

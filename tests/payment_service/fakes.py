"""Small in-memory fakes of the payment service's ports, for service-layer unit tests."""

from __future__ import annotations

import copy
from collections.abc import Callable
from types import TracebackType
from typing import Self

from common.errors import ConcurrentUpdate, DependencyUnavailable, NotFound
from common.money import Money
from payment_service.domain.model import ChargeAnswer, Payment, StatusChange
from payment_service.service_layer.ports import AccountInfo, ChargeResult


class FakeStore:
    """The committed rows, shared by every unit of work. Each unit of work sees them through
    its own TrackingStore, which stages its writes until commit; the store contract tests
    (tests/payment_service/adapters) hold this fake to the SQL repository's behaviour."""

    def __init__(self) -> None:
        self.rows: dict[str, Payment] = {}
        self.seqs: dict[str, int] = {}
        self.history_rows: dict[str, list[StatusChange]] = {}
        self.processed: set[tuple[str, str]] = set()

    def by_key(self, key: str) -> Payment | None:
        return next((p for p in self.rows.values() if p.idempotency_key == key), None)


def _stored(payment: Payment) -> Payment:
    stored = copy.deepcopy(payment)
    stored.new_changes, stored._events = [], []
    return stored


class TrackingStore:
    """One unit of work's view: registers what it hands out (as the SQL repository does),
    refuses what the database would refuse, and applies its writes only at commit."""

    def __init__(self, store: FakeStore, track: Callable[[Payment], None]) -> None:
        self._store = store
        self._track = track
        self._staged: list[Callable[[], None]] = []
        self._added: dict[str, Payment] = {}
        self._marked: set[tuple[str, str]] = set()

    async def get(self, payment_id: str, *, for_update: bool = False) -> Payment | None:
        return self._seen(self._added.get(payment_id) or self._store.rows.get(payment_id))

    async def by_idempotency_key(self, key: str) -> Payment | None:
        added = next((p for p in self._added.values() if p.idempotency_key == key), None)
        return self._seen(added or self._store.by_key(key))

    def _seen(self, payment: Payment | None) -> Payment | None:
        if payment is None:
            return None
        loaded = copy.deepcopy(payment)
        self._track(loaded)
        return loaded

    async def add(self, payment: Payment) -> None:
        self._track(payment)
        taken = self._store.by_key(payment.idempotency_key) or any(
            p.idempotency_key == payment.idempotency_key for p in self._added.values()
        )
        if taken:
            raise ConcurrentUpdate("a concurrent request changed the same data")
        self._added[payment.payment_id] = _stored(payment)
        self._stage(payment)

    async def save(self, payment: Payment) -> None:
        if not payment.has_changes:
            return
        expected = payment.version - len(payment.new_changes)
        current = self._added.get(payment.payment_id) or self._store.rows.get(payment.payment_id)
        if current is None or current.version != expected:
            raise ConcurrentUpdate(f"payment {payment.payment_id} changed concurrently")
        self._stage(payment)

    def _stage(self, payment: Payment) -> None:
        changes, payment.new_changes = payment.new_changes, []
        stored = _stored(payment)

        def apply() -> None:
            store = self._store
            store.seqs.setdefault(stored.payment_id, len(store.seqs) + 1)
            store.rows[stored.payment_id] = stored
            store.history_rows.setdefault(stored.payment_id, []).extend(changes)

        self._staged.append(apply)

    def apply(self) -> None:
        for write in self._staged:
            write()
        self._store.processed |= self._marked
        self._staged, self._added, self._marked = [], {}, set()

    async def history(self, payment_id: str) -> list[StatusChange]:
        return list(self._store.history_rows.get(payment_id, []))

    async def list(
        self, *, account_id: str, limit: int, before_seq: int | None
    ) -> list[tuple[int, Payment]]:
        found = [
            (self._store.seqs[p.payment_id], copy.deepcopy(p))
            for p in self._store.rows.values()
            if not account_id or account_id in (p.source_account_id, p.destination_account_id)
        ]
        found = [(seq, p) for seq, p in found if before_seq is None or seq < before_seq]
        return sorted(found, key=lambda item: item[0], reverse=True)[:limit]

    async def mark_processed(self, consumer: str, event_id: str) -> bool:
        key = (consumer, event_id)
        if key in self._store.processed or key in self._marked:
            return False
        self._marked.add(key)
        return True


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
        self.payments.apply()
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

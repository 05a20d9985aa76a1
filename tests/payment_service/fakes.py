"""Small in-memory fakes of the payment service's ports, for service-layer unit tests."""

from __future__ import annotations

import builtins
import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self

from common.errors import ConcurrentUpdate, DependencyUnavailable, InsufficientFunds, NotFound
from common.ids import new_id
from common.money import Money
from payment_service.domain.errors import ReviewAlreadyResolved
from payment_service.domain.model import Payment
from payment_service.domain.requests import ClaimAnswer, IdempotencyClaim, PaymentFilter
from payment_service.domain.review import ReviewCase, ReviewOpening, ReviewStatus
from payment_service.domain.saga import ProviderAnswer
from payment_service.domain.status import PaymentStatus
from payment_service.domain.trail import PaymentStep, StatusChange
from payment_service.service_layer.ports import AccountInfo, OperationState, ProviderResult


class FakeStore:
    """The committed rows, shared by every unit of work. Each unit of work sees them through
    its own TrackingStore, which stages its writes until commit; the store contract tests
    (tests/payment_service/adapters) hold this fake to the SQL repository's behaviour."""

    def __init__(self) -> None:
        self.rows: dict[str, Payment] = {}
        self.seqs: dict[str, int] = {}
        self.history_rows: dict[str, list[StatusChange]] = {}
        self.step_rows: dict[str, list[PaymentStep]] = {}
        self.processed: set[tuple[str, str]] = set()
        self.claims: dict[tuple[str, str], IdempotencyClaim] = {}
        self.cases: dict[str, ReviewCase] = {}
        self.case_seqs: dict[str, int] = {}
        self.alarmed: dict[str, datetime] = {}

    def open_case_of(self, payment_id: str) -> ReviewCase | None:
        for case in self.cases.values():
            if case.payment_id == payment_id and case.status is ReviewStatus.OPEN:
                return case
        return None

    def open_review(self, opening: ReviewOpening) -> None:
        """As the SQL upsert: a new case, or more evidence on the payment's open one."""
        case = self.open_case_of(opening.payment_id)
        if case is not None:
            case.evidence.append(opening)
            return
        case = ReviewCase(
            new_id(),
            opening.payment_id,
            opening.reason_code,
            opening.reason,
            opening.occurred_at,
            evidence=[opening],
        )
        self.cases[case.case_id] = case
        self.case_seqs[case.case_id] = len(self.case_seqs) + 1


def _stored(payment: Payment) -> Payment:
    stored = copy.deepcopy(payment)
    stored.new_changes, stored.new_steps, stored._events = [], [], []
    stored.new_reviews = []
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
        self._claimed: dict[tuple[str, str], IdempotencyClaim] = {}

    async def get(self, payment_id: str, *, for_update: bool = False) -> Payment | None:
        return self._seen(self._added.get(payment_id) or self._store.rows.get(payment_id))

    async def get_many(
        self, payment_ids: Sequence[str], *, for_update: bool = False
    ) -> dict[str, Payment]:
        found = [await self.get(payment_id) for payment_id in sorted(set(payment_ids))]
        return {payment.payment_id: payment for payment in found if payment is not None}

    async def claim_key(self, claim: IdempotencyClaim) -> IdempotencyClaim | None:
        slot = (claim.caller, claim.key)
        prior = self._claimed.get(slot) or self._store.claims.get(slot)
        if prior is not None:
            return prior
        self._claimed[slot] = claim
        return None

    async def add_claimed(
        self, claims: Sequence[IdempotencyClaim], payments: Sequence[Payment]
    ) -> builtins.list[IdempotencyClaim | None]:
        priors = [await self.claim_key(claim) for claim in claims]
        for payment, prior in zip(payments, priors, strict=True):
            if prior is None:
                await self.add(payment)
        return priors

    async def claimed(self, caller: str, key: str) -> IdempotencyClaim | None:
        return self._claimed.get((caller, key)) or self._store.claims.get((caller, key))

    async def answer_claims(self, answers: Sequence[ClaimAnswer]) -> None:
        for a in answers:
            await self.answer_claim(
                a.payment_id,
                version=a.version,
                error_reason=a.error_reason,
                error_message=a.error_message,
            )

    async def answer_claim(
        self, payment_id: str, *, version: int, error_reason: str = "", error_message: str = ""
    ) -> None:
        for slot, claim in {**self._store.claims, **self._claimed}.items():
            if claim.payment_id == payment_id and not claim.answered:
                self._claimed[slot] = replace(
                    claim,
                    response_version=version,
                    error_reason=error_reason,
                    error_message=error_message,
                )

    async def stalled(self, *, older_than: timedelta, limit: int) -> list[str]:
        cutoff = datetime.now(UTC) - older_than

        def last_looked_at(p: Payment) -> datetime | None:
            return datetime.fromisoformat(p.saga.resumed_at) if p.saga.resumed_at else p.updated_at

        found = [
            p
            for p in self._store.rows.values()
            if p.status in (PaymentStatus.INITIATED, PaymentStatus.REFUNDING)
            and p.updated_at is not None
            and p.updated_at < cutoff
            and (last_looked_at(p) or cutoff) < cutoff
        ]
        found.sort(key=lambda p: p.updated_at or cutoff)
        return [p.payment_id for p in found[:limit]]

    def _seen(self, payment: Payment | None) -> Payment | None:
        if payment is None:
            return None
        loaded = copy.deepcopy(payment)
        self._track(loaded)
        return loaded

    async def add(self, payment: Payment) -> None:
        self._track(payment)
        if payment.payment_id in self._store.rows:
            raise ConcurrentUpdate("a concurrent request changed the same data")
        self._added[payment.payment_id] = _stored(payment)
        self._stage(payment)

    async def save_many(
        self, payments: Sequence[Payment], answers: Sequence[ClaimAnswer] = ()
    ) -> None:
        for payment in payments:
            await self.save(payment)
        await self.answer_claims(answers)

    async def save(self, payment: Payment) -> None:
        if not payment.has_changes:
            return
        expected = payment.version - len(payment.new_changes)
        current = self._added.get(payment.payment_id) or self._store.rows.get(payment.payment_id)
        expected_steps = payment.steps - len(payment.new_steps)
        if current is None or (current.version, current.steps) != (expected, expected_steps):
            raise ConcurrentUpdate(f"payment {payment.payment_id} changed concurrently")
        self._stage(payment)

    def _stage(self, payment: Payment) -> None:
        changes, payment.new_changes = payment.new_changes, []
        steps, payment.new_steps = payment.new_steps, []
        reviews, payment.new_reviews = payment.new_reviews, []
        stored = _stored(payment)

        def apply() -> None:
            store = self._store
            store.seqs.setdefault(stored.payment_id, len(store.seqs) + 1)
            store.rows[stored.payment_id] = stored
            store.history_rows.setdefault(stored.payment_id, []).extend(changes)
            store.step_rows.setdefault(stored.payment_id, []).extend(steps)
            for opening in reviews:
                store.open_review(opening)

        self._staged.append(apply)

    def apply(self) -> None:
        for write in self._staged:
            write()
        self._store.processed |= self._marked
        self._store.claims.update(self._claimed)
        self._staged, self._added, self._marked, self._claimed = [], {}, set(), {}

    async def purge_claims(self, *, older_than: timedelta, limit: int) -> int:
        return 0  # the fake keeps no clock; the SQL store's purge is tested on PostgreSQL

    async def history(self, payment_id: str) -> list[StatusChange]:
        return list(self._store.history_rows.get(payment_id, []))

    async def steps(self, payment_id: str) -> list[PaymentStep]:
        return list(self._store.step_rows.get(payment_id, []))

    async def list(
        self, *, account_id: str, limit: int, before_seq: int | None, where: PaymentFilter
    ) -> list[tuple[int, Payment]]:
        found = [
            (self._store.seqs[p.payment_id], copy.deepcopy(p))
            for p in self._store.rows.values()
            if (not account_id or account_id in (p.source_account_id, p.destination_account_id))
            and where.matches(p)
        ]
        found = [(seq, p) for seq, p in found if before_seq is None or seq < before_seq]
        return sorted(found, key=lambda item: item[0], reverse=True)[:limit]

    async def get_case(self, case_id: str, *, for_update: bool = False) -> ReviewCase | None:
        case = self._store.cases.get(case_id)
        return copy.deepcopy(case) if case is not None else None

    async def open_case(self, payment_id: str) -> ReviewCase | None:
        return copy.deepcopy(self._store.open_case_of(payment_id))

    async def case_with_key(self, payment_id: str, key: str) -> ReviewCase | None:
        seqs = self._store.case_seqs
        found = sorted(
            (seqs[case.case_id], case)
            for case in self._store.cases.values()
            if case.payment_id == payment_id and any(e.key == key for e in case.evidence)
        )
        return copy.deepcopy(found[0][1]) if found else None

    async def list_cases(
        self, *, status: ReviewStatus, limit: int, after_seq: int | None
    ) -> list[tuple[int, ReviewCase]]:
        seqs = self._store.case_seqs
        found = sorted(
            (seqs[case.case_id], copy.deepcopy(case))
            for case in self._store.cases.values()
            if case.status is status and seqs[case.case_id] > (after_seq or 0)
        )
        return found[:limit]

    async def save_case(self, case: ReviewCase) -> None:
        stored = self._store.cases.get(case.case_id)
        if stored is None or stored.status is not ReviewStatus.OPEN:
            raise ReviewAlreadyResolved(f"review case {case.case_id} is already resolved")
        saved = copy.deepcopy(case)

        def apply() -> None:
            current = self._store.cases[saved.case_id]
            if current.status is not ReviewStatus.OPEN:
                raise ReviewAlreadyResolved(f"review case {saved.case_id} is already resolved")
            decided = saved.decision.resolution if saved.decision else None
            if decided is not None and current.claimed not in (None, decided):
                raise ReviewAlreadyResolved(f"review case {saved.case_id} is being resolved")
            current.status, current.decision = saved.status, saved.decision
            current.claimed = saved.claimed

        self._staged.append(apply)

    async def alarm_overdue(
        self, *, opened_before: datetime, alarmed_before: datetime, now: datetime, limit: int
    ) -> list[ReviewCase]:
        alarmed = self._store.alarmed
        due = [
            case
            for case in self._store.cases.values()
            if case.status is ReviewStatus.OPEN
            and case.opened_at < opened_before
            and (case.case_id not in alarmed or alarmed[case.case_id] < alarmed_before)
        ]
        due = sorted(due, key=lambda case: self._store.case_seqs[case.case_id])[:limit]

        def apply() -> None:
            alarmed.update((case.case_id, now) for case in due)

        self._staged.append(apply)
        return [copy.deepcopy(case) for case in due]

    async def mark_processed(self, consumer: str, event_id: str) -> bool:
        key = (consumer, event_id)
        if key in self._store.processed or key in self._marked:
            return False
        self._marked.add(key)
        return True

    async def lock_many(
        self, payment_ids: Sequence[str], reactions: Mapping[str, tuple[str, str]]
    ) -> tuple[dict[str, Payment], set[tuple[str, str]]]:
        locked = await self.get_many(payment_ids, for_update=True)
        # As the SQL store: only the events of payments found are recorded.
        found = [event for payment_id, event in reactions.items() if payment_id in locked]
        return locked, {event for event in found if await self.mark_processed(*event)}


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

    async def create(
        self, claims: Sequence[IdempotencyClaim], payments: Sequence[Payment]
    ) -> list[IdempotencyClaim | None]:
        priors = await self.payments.add_claimed(claims, payments)
        await self.commit()
        return priors


class FakeWallet:
    """Balances per account (available; holds apart), idempotent on operation refs."""

    def __init__(self) -> None:
        self.accounts: dict[str, str] = {}
        self.available: dict[str, int] = {}
        self.credits: dict[str, tuple[str, Money]] = {}
        self.holds: dict[str, tuple[str, int, str]] = {}  # hold id: account, amount, status
        self.refs: dict[str, str] = {}
        self.unavailable = False
        self.lookups = 0
        self.owners: dict[str, str] = {}  # account id: owner id (unset: nobody's)

    def _up(self) -> None:
        if self.unavailable:
            raise DependencyUnavailable("wallet down")

    def _account(self, account_id: str) -> None:
        if account_id not in self.accounts:
            raise NotFound("account", account_id)

    async def get_account(self, account_id: str) -> AccountInfo:
        self.lookups += 1
        self._account(account_id)
        return AccountInfo(account_id, self.accounts[account_id], self.owners.get(account_id, ""))

    async def credit(self, *, operation_ref: str, account_id: str, amount: Money) -> None:
        self._up()
        self._account(account_id)
        if operation_ref not in self.credits:
            self.credits[operation_ref] = (account_id, amount)
            self.available[account_id] = self.available.get(account_id, 0) + amount.amount_minor

    async def place_hold(
        self, *, operation_ref: str, account_id: str, amount: Money, reference: str
    ) -> str:
        self._up()
        self._account(account_id)
        if operation_ref in self.refs:
            return self.refs[operation_ref]
        if self.available.get(account_id, 0) < amount.amount_minor:
            raise InsufficientFunds(f"account {account_id} lacks {amount}")
        self.available[account_id] -= amount.amount_minor
        hold_id = f"hold-{operation_ref}"
        self.holds[hold_id] = (account_id, amount.amount_minor, "open")
        self.refs[operation_ref] = hold_id
        return hold_id

    async def capture_hold(
        self, *, operation_ref: str, hold_id: str, account_id: str, provider: str
    ) -> None:
        self._up()
        account, amount, status = self.holds[hold_id]
        if status == "open":
            self.holds[hold_id] = (account, amount, "captured")

    async def release_hold(self, *, operation_ref: str, hold_id: str, account_id: str) -> None:
        self._up()
        account, amount, status = self.holds[hold_id]
        if status == "open":
            self.holds[hold_id] = (account, amount, "released")
            self.available[account] += amount

    async def transfer(
        self,
        *,
        operation_ref: str,
        source_account_id: str,
        destination_account_id: str,
        amount: Money,
        reference: str,
    ) -> str:
        self._up()
        self._account(source_account_id)
        self._account(destination_account_id)
        if operation_ref in self.refs:
            return self.refs[operation_ref]
        if self.available.get(source_account_id, 0) < amount.amount_minor:
            raise InsufficientFunds(f"account {source_account_id} lacks {amount}")
        self.available[source_account_id] -= amount.amount_minor
        self.available[destination_account_id] = (
            self.available.get(destination_account_id, 0) + amount.amount_minor
        )
        self.refs[operation_ref] = f"tx-{operation_ref}"
        return self.refs[operation_ref]


class FakeGateway:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.unavailable = False
        self.answer = ProviderAnswer.ACCEPTED
        # What SyncOperation finds out: the gateway's status after asking the provider.
        self.sync_status = "pending"
        self.sync_reason = ""
        self.synced: list[str] = []

    def _answer(self, idempotency_key: str, reference: str, declined: str) -> ProviderResult:
        if self.unavailable:
            raise DependencyUnavailable("gateway down")
        self.calls.append(idempotency_key)
        reason = declined if self.answer is ProviderAnswer.DECLINED else ""
        return ProviderResult(f"op-{idempotency_key}", self.answer, reason)

    async def charge(
        self, *, idempotency_key: str, amount: Money, payment_method: str, reference: str
    ) -> ProviderResult:
        result = self._answer(idempotency_key, reference, "card_declined")
        return replace(result, operation_id=f"op-{reference}")

    async def payout(
        self, *, idempotency_key: str, amount: Money, destination: str, reference: str
    ) -> ProviderResult:
        return self._answer(idempotency_key, reference, "account_closed")

    async def refund(
        self, *, idempotency_key: str, charge_operation_id: str, amount: Money, reference: str
    ) -> ProviderResult:
        return self._answer(idempotency_key, reference, "refund_declined")

    async def sync_operation(self, operation_id: str) -> OperationState:
        if self.unavailable:
            raise DependencyUnavailable("gateway down")
        if not operation_id.startswith("op-"):
            raise NotFound("operation", operation_id)
        self.synced.append(operation_id)
        return OperationState(operation_id, self.sync_status, self.sync_reason)

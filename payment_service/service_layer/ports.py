"""What the payment service needs from the outside, as small Protocols (fakes in unit tests)."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from common.money import Money
from common.uow import UnitOfWork as BaseUnitOfWork
from payment_service.domain.model import Payment
from payment_service.domain.requests import ClaimAnswer, IdempotencyClaim, PaymentFilter
from payment_service.domain.review import ReviewCase, ReviewStatus
from payment_service.domain.saga import ProviderAnswer
from payment_service.domain.trail import PaymentStep, StatusChange


@dataclass(frozen=True, slots=True)
class AccountInfo:
    account_id: str
    currency: str
    owner_id: str


@dataclass(frozen=True, slots=True)
class ProviderResult:
    """The gateway's answer to a charge, payout or refund request."""

    operation_id: str
    answer: ProviderAnswer
    failure_reason: str = ""


@dataclass(frozen=True, slots=True)
class OperationState:
    """A gateway operation as the gateway knows it after asking the provider again."""

    operation_id: str
    # The gateway's status: created (the provider's answer unknown), pending, succeeded or
    # failed; the last two are the provider's final word.
    status: str
    failure_reason: str = ""

    @property
    def settled(self) -> bool:
        return self.status in ("succeeded", "failed")

    @property
    def answer(self) -> str:
        """What the provider said, for the audit trail."""
        said = "unknown" if self.status == "created" else self.status
        return f"{said}: {self.failure_reason}" if self.failure_reason else said


class ChangeFeed(Protocol):
    def subscribe(self, payment_id: str) -> AbstractAsyncContextManager[asyncio.Event]:
        """An event set whenever the payment may have changed; the watcher clears it."""
        ...


class WalletPort(Protocol):
    """Every mutation is idempotent on its operation_ref. A refusal (no funds, frozen, no FX
    rate, ...) raises a FailedPrecondition carrying the wallet's reason; an unreachable
    wallet raises DependencyUnavailable."""

    async def get_account(self, account_id: str) -> AccountInfo: ...
    async def credit(self, *, operation_ref: str, account_id: str, amount: Money) -> None: ...
    async def place_hold(
        self, *, operation_ref: str, account_id: str, amount: Money, reference: str
    ) -> str:
        """Returns the hold's id."""
        ...

    async def capture_hold(
        self, *, operation_ref: str, hold_id: str, account_id: str, provider: str
    ) -> None:
        """`account_id`: the hold's account (the payment's source), which spares the wallet
        a read of the hold."""
        ...

    async def release_hold(self, *, operation_ref: str, hold_id: str, account_id: str) -> None:
        """`account_id`: as for `capture_hold`."""
        ...

    async def transfer(
        self,
        *,
        operation_ref: str,
        source_account_id: str,
        destination_account_id: str,
        amount: Money,
        reference: str,
    ) -> str:
        """Returns the ledger transaction's id."""
        ...


class GatewayPort(Protocol):
    async def charge(
        self, *, idempotency_key: str, amount: Money, payment_method: str, reference: str
    ) -> ProviderResult: ...
    async def payout(
        self, *, idempotency_key: str, amount: Money, destination: str, reference: str
    ) -> ProviderResult: ...
    async def refund(
        self, *, idempotency_key: str, charge_operation_id: str, amount: Money, reference: str
    ) -> ProviderResult: ...
    async def sync_operation(self, operation_id: str) -> OperationState:
        """Asks the provider now what became of the operation; the gateway applies the answer
        (and emits its event) itself. NotFound for an operation the gateway does not know."""
        ...


class PaymentStore(Protocol):
    async def get(self, payment_id: str, *, for_update: bool = False) -> Payment | None: ...
    async def get_many(
        self, payment_ids: Sequence[str], *, for_update: bool = False
    ) -> dict[str, Payment]:
        """The payments that exist among `payment_ids`; locked in payment id order."""
        ...

    async def lock_many(
        self, payment_ids: Sequence[str], reactions: Mapping[str, tuple[str, str]]
    ) -> tuple[dict[str, Payment], set[tuple[str, str]]]:
        """`get_many(payment_ids, for_update=True)`, and `mark_processed` of the event each
        payment found reacts to (`reactions`: payment id to (consumer, event id)), at once:
        the payments, and the (consumer, event id) pairs processed now for the first time."""
        ...

    async def claim_key(self, claim: IdempotencyClaim) -> IdempotencyClaim | None:
        """Records the claim, or returns the earlier claim of the same caller and key. A
        concurrent claim of the same key waits for the first one's transaction to end."""
        ...

    async def add_claimed(
        self, claims: Sequence[IdempotencyClaim], payments: Sequence[Payment]
    ) -> builtins.list[IdempotencyClaim | None]:
        """Claims each payment's key (`claims[i]` is `payments[i]`'s; keys distinct) and adds
        the payments whose key was free; answers in order None for a payment added, the
        earlier claim of its key for one that was not."""
        ...

    async def claimed(self, caller: str, key: str) -> IdempotencyClaim | None: ...
    async def answer_claim(
        self, payment_id: str, *, version: int, error_reason: str = "", error_message: str = ""
    ) -> None:
        """Stores the response of the key that made the payment, if it has none yet."""
        ...

    async def answer_claims(self, answers: Sequence[ClaimAnswer]) -> None:
        """`answer_claim` for many payments at once (one statement)."""
        ...

    async def stalled(self, *, older_than: timedelta, limit: int) -> list[str]:
        """Ids of payments whose saga may have stopped between steps (initiated or
        refunding, unchanged and not resumed for `older_than`), locked; others' locked rows
        are skipped."""
        ...

    async def purge_claims(self, *, older_than: timedelta, limit: int) -> int: ...

    async def add(self, payment: Payment) -> None: ...
    async def save(self, payment: Payment) -> None: ...
    async def save_many(
        self, payments: Sequence[Payment], answers: Sequence[ClaimAnswer] = ()
    ) -> None:
        """`save` for many distinct payments at once, and `answer_claims` for `answers`;
        ConcurrentUpdate if any one moved (and then the unit must not commit: the events of
        the payments may have been taken for the outbox with the write)."""
        ...

    async def history(self, payment_id: str) -> list[StatusChange]: ...
    async def steps(self, payment_id: str) -> list[PaymentStep]: ...
    async def list(
        self, *, account_id: str, limit: int, before_seq: int | None, where: PaymentFilter
    ) -> list[tuple[int, Payment]]: ...
    async def mark_processed(self, consumer: str, event_id: str) -> bool: ...

    # -- review cases. A payment's `new_reviews` are written by `add`/`save` with it: each
    # opens a case, or adds its evidence to the payment's open case (at most one is open).
    async def get_case(self, case_id: str, *, for_update: bool = False) -> ReviewCase | None:
        """A case; `for_update` locks it until the transaction ends. Callers lock the
        payment first, then its case, as `save` does when it opens one."""
        ...

    async def open_case(self, payment_id: str) -> ReviewCase | None: ...
    async def case_with_key(self, payment_id: str, key: str) -> ReviewCase | None:
        """The payment's case, open or resolved, whose evidence holds a mismatch `key`."""
        ...

    async def list_cases(
        self, *, status: ReviewStatus, limit: int, after_seq: int | None
    ) -> builtins.list[tuple[int, ReviewCase]]:
        """Cases with this status, oldest first, after the cursor `after_seq`."""
        ...

    async def save_case(self, case: ReviewCase) -> None:
        """Writes a resolved case; REVIEW_ALREADY_RESOLVED if it was resolved meanwhile."""
        ...

    async def alarm_overdue(
        self, *, opened_before: datetime, alarmed_before: datetime, now: datetime, limit: int
    ) -> builtins.list[ReviewCase]:
        """Open cases opened before `opened_before` whose last alarm (if any) is older than
        `alarmed_before`, marked as alarmed `now`; rows another replica holds are skipped, so
        each case alarms at most once per period whatever the number of replicas."""
        ...


class UnitOfWork(BaseUnitOfWork, Protocol):
    @property
    def payments(self) -> PaymentStore: ...

    async def create(
        self, claims: Sequence[IdempotencyClaim], payments: Sequence[Payment]
    ) -> builtins.list[IdempotencyClaim | None]:
        """`payments.add_claimed` and `commit` in one, for a unit that does nothing else: the
        payments whose key was free are durable, with their events, when it returns; answers
        as `add_claimed` does."""
        ...

"""The one shape of every wallet mutation. A mutation runs in one unit of work: lock the
accounts, replay the operation if its ref was seen, else let the domain decide, then store
events, projections, journal and the operation record together. Every mutation is idempotent
on its operation_ref.

With group commit on (the service's default, see common/group_commit.py), mutations that arrive
together share that unit of work; each is still decided, replayed or refused on its own.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from common.errors import ConcurrentUpdate, DependencyUnavailable, DomainError, retry_on_conflict
from common.group_commit import GroupCommit, Job
from common.money import Money
from wallet_service.domain.account import Account, Limits
from wallet_service.domain.errors import AccountNotFound, OperationRefReused
from wallet_service.domain.ledger import LedgerTransaction, Operation
from wallet_service.service_layer.ports import Observe, UnitOfWork

T = TypeVar("T")
# A hot account's writers queue on its row lock, so a lost race is rare (a stale load or a
# deadlock); a few retries absorb it, after which the caller sees ABORTED and may retry.
ATTEMPTS = 5

Action = Callable[[UnitOfWork, dict[str, Account]], Awaitable[tuple[T, dict[str, Any]]]]
Replay = Callable[[UnitOfWork, dict[str, Any]], Awaitable[T]]


@dataclass(frozen=True, slots=True)
class Mutation(Generic[T]):
    """One mutation: its ref and fingerprint, the accounts it locks, what it does, and how a
    repeat of its ref answers from what it stored."""

    operation_ref: str
    kind: str
    fingerprint: str
    account_ids: list[str]
    act: Action[T]
    replay: Replay[T]


def fingerprint(*parts: object) -> str:
    return "|".join(str(p) for p in parts)


def money_part(amount: Money | None) -> str:
    return "-" if amount is None else f"{amount.amount_minor} {amount.currency}"


async def replay_transaction(uow: UnitOfWork, stored: dict[str, Any]) -> LedgerTransaction:
    txn = await uow.accounts.get_transaction(stored["transaction_id"])
    if txn is None:  # pragma: no cover - the journal is append-only
        raise AssertionError("an operation's transaction vanished")
    return txn


def _unobserved(kind: str, exc: BaseException | None, started: float) -> None:
    pass


def _unwrap(outcome: Any) -> Any:
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


class Mutations:
    """What every use case shares: its unit of work, limits, clock, and the runner of its
    mutations. The use cases (accounts, postings, holds, queries, rates) extend it."""

    def __init__(
        self,
        uow: Callable[[], UnitOfWork],
        *,
        limits: Limits | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        attempts: int = ATTEMPTS,
        group_commit: bool = False,
        observe: Observe = _unobserved,
        reader: Callable[[], UnitOfWork] | None = None,
    ) -> None:
        self._uow = uow
        # For lone reads (a hold before its capture or release, an account): a unit of work
        # that only reads, in autocommit where the adapter has it (one statement, no BEGIN
        # and COMMIT around it).
        self._reader = reader or uow
        self._limits = limits or Limits()
        self._clock = clock
        self._attempts = attempts
        self._observe = observe
        self._group = GroupCommit(self._run_batch, self._run_alone) if group_commit else None

    async def _operate(self, mutation: Mutation[T]) -> T:
        """Runs the mutation, in the next group commit or in a unit of work of its own, and
        tells `observe` how it went."""
        started = time.perf_counter()
        try:
            if self._group is not None:
                result: T = await self._group.submit(mutation)
            else:
                result = await self._alone(mutation)
        except Exception as exc:
            self._observe(mutation.kind, exc, started)
            raise
        self._observe(mutation.kind, None, started)
        return result

    async def _alone(self, mutation: Mutation[Any]) -> Any:
        async def attempt() -> Any:
            async with self._uow() as uow:
                outcome = await self._decide_all(uow, [mutation])
                await uow.commit()
            return _unwrap(outcome[0])

        return await retry_on_conflict(attempt, attempts=self._attempts)

    async def _run_batch(self, jobs: list[Job]) -> None:
        """Decides every job in one unit of work and commits them together."""
        async with self._uow() as uow:
            outcomes = await self._decide_all(uow, [job.spec for job in jobs])
            await uow.commit()
        for job, outcome in zip(jobs, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                job.fail(outcome)
            else:
                job.settle(outcome)

    async def _run_alone(self, jobs: list[Job]) -> None:
        (job,) = jobs
        job.settle(await self._alone(job.spec))

    async def _decide_all(self, uow: UnitOfWork, mutations: list[Mutation[Any]]) -> list[Any]:
        """Locks every account involved, then decides each request in arrival order. A
        request refused by the domain leaves no trace and answers with its error."""
        accounts, previous = await uow.accounts.lock(
            [a for m in mutations for a in m.account_ids],
            operation_refs=[m.operation_ref for m in mutations],
        )
        decided: dict[str, tuple[Mutation[Any], Any]] = {}
        outcomes: list[Any] = []
        for mutation in mutations:
            try:
                outcomes.append(await self._decide(uow, mutation, accounts, previous, decided))
            except DomainError as exc:
                if isinstance(exc, ConcurrentUpdate | DependencyUnavailable):
                    raise
                outcomes.append(exc)
        await uow.accounts.save(accounts.values())
        return outcomes

    async def _decide(
        self,
        uow: UnitOfWork,
        mutation: Mutation[Any],
        accounts: dict[str, Account],
        previous: dict[str, Operation],
        decided: dict[str, tuple[Mutation[Any], Any]],
    ) -> Any:
        recorded = previous.get(mutation.operation_ref)
        if recorded is not None:
            if (recorded.kind, recorded.fingerprint) != (mutation.kind, mutation.fingerprint):
                raise OperationRefReused(mutation.operation_ref)
            return await mutation.replay(uow, recorded.result)
        if mutation.operation_ref in decided:  # the same ref twice in one batch
            first, result = decided[mutation.operation_ref]
            if (first.kind, first.fingerprint) != (mutation.kind, mutation.fingerprint):
                raise OperationRefReused(mutation.operation_ref)
            return result
        for account_id in mutation.account_ids:
            if account_id not in accounts:
                raise AccountNotFound(account_id)
        result, stored = await mutation.act(uow, accounts)
        await uow.accounts.add_operation(
            Operation(mutation.operation_ref, mutation.kind, mutation.fingerprint, stored)
        )
        decided[mutation.operation_ref] = (mutation, result)
        return result

"""One step of a payment's saga, written once: lock the payment, let it decide, save, commit,
and run it all again when it lost a race (`retry_on_conflict`).

Every call to another service happens between two steps, never inside one; what the call
answered is a step's input. A decision that changes nothing says so (`Unchanged`): the
transaction then ends without a write.

`Steps` runs them with group commit (common/group_commit.py): the saga's consumers handle up
to 32 payments at once, and the steps that arrive together share one transaction of four
statements: BEGIN; one that locks their payments and records the events the reactions among
them react to as processed (`PaymentStore.lock_many`); one that saves the payments, answers
their keys and writes their events to the outbox (`PaymentStore.save_many`); COMMIT. A step
that must save on its own (a refund settling its deposit, a step with `then`) adds its
statements, and the unit of work's commit writes the events those leave (one outbox insert).
Each step is decided on its own payment exactly as alone; a batch that fails for any reason
(one step's error, a lost race) is rolled back whole and rerun step by step, so no step's
answer depends on its neighbours'.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, NoReturn, TypeVar, cast

from common.errors import NotFound, retry_on_conflict
from common.group_commit import GroupCommit, Job, first_per_key
from payment_service.domain.model import Payment
from payment_service.domain.requests import ClaimAnswer
from payment_service.service_layer.ports import PaymentStore, UnitOfWork

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Unchanged(Generic[T]):
    """A decision to leave the payment as it is: nothing is saved, and the step answers
    `value`. The transaction still ends with COMMIT (of nothing but its row lock): psycopg
    drops every prepared statement of the connection on ROLLBACK, and re-parsing them costs
    more than the commit."""

    value: T


async def save_settling_refunds(store: PaymentStore, payment: Payment) -> None:
    """Saves the payment; a refund that has just ended settles on its deposit in the same
    transaction (moving it to partially_refunded or refunded, or freeing its reservation).
    The refund is locked before its deposit, here as everywhere."""
    if payment.settles_refund():
        deposit = await store.get(payment.parent_payment_id, for_update=True)
        if deposit is not None:
            deposit.settle_refund(payment)
            await store.save(deposit)
    await store.save(payment)


def _not_found(payment_id: str) -> Callable[[], NoReturn]:
    def missing() -> NoReturn:
        raise NotFound("payment", payment_id)

    return missing


async def _read_nothing(store: PaymentStore, payment: Payment) -> None:
    return None


@dataclass(frozen=True, slots=True)
class _Step(Generic[R, T]):
    payment_id: str
    read: Callable[[PaymentStore, Payment], Awaitable[R]]
    decide: Callable[[Payment, R], T | Unchanged[T]]
    missing: Callable[[], T]
    then: Callable[[PaymentStore, T], Awaitable[None]] | None
    # A reaction to an event: (consumer, event_id), recorded processed by `read` alone and,
    # in a group commit, by the batch's locking statement (`read` then answers from it).
    event: tuple[str, str] | None = None
    # The payment, as the step leaves it, is the response of the key that made it, with
    # this refusal (reason, message) or none: one statement for the whole batch.
    answer: tuple[str, str] | None = None


async def step(
    uow: Callable[[], UnitOfWork],
    payment_id: str,
    decide: Callable[[Payment], T | Unchanged[T]],
    *,
    missing: Callable[[], T] | None = None,
    then: Callable[[PaymentStore, T], Awaitable[None]] | None = None,
    retry: bool = True,
) -> T:
    """Locks the payment, lets `decide` change it, saves it (settling a refund that ended on
    its deposit), runs `then` with what was decided (a write of the same transaction), and
    commits; all of it again on a lost race, unless `retry` is off (a caller that retries a
    larger whole). A payment that does not exist is `missing()` (by default NOT_FOUND)."""
    return await step_with(
        uow,
        payment_id,
        _read_nothing,
        lambda payment, _: decide(payment),
        missing=missing,
        then=then,
        retry=retry,
    )


async def step_with(
    uow: Callable[[], UnitOfWork],
    payment_id: str,
    read: Callable[[PaymentStore, Payment], Awaitable[R]],
    decide: Callable[[Payment, R], T | Unchanged[T]],
    *,
    missing: Callable[[], T] | None = None,
    then: Callable[[PaymentStore, T], Awaitable[None]] | None = None,
    retry: bool = True,
) -> T:
    """`step`, for a decision that needs more than the payment: `read` runs under the
    payment's lock (an event already processed, an earlier attempt, a review case) and its
    answer goes to `decide` with the payment."""
    spec = _Step(payment_id, read, decide, missing or _not_found(payment_id), then)
    if not retry:
        return await _attempt(uow, spec)
    return await retry_on_conflict(lambda: _attempt(uow, spec))


async def _attempt(uow: Callable[[], UnitOfWork], spec: _Step[Any, T]) -> T:
    async with uow() as unit:
        store = unit.payments
        value = await _apply(store, spec, await store.get(spec.payment_id, for_update=True))
        await unit.commit()
        return value


async def _apply(
    store: PaymentStore,
    spec: _Step[Any, T],
    payment: Payment | None,
    first_seen: set[tuple[str, str]] | None = None,
    deferred: _Deferred | None = None,
) -> T:
    """One step inside an open transaction, its payment locked: decided, saved, followed.
    In a batch: `first_seen` holds the (consumer, event_id) the batch recorded processed for
    the first time, and a plain save (no refund to settle, nothing to follow) and its key's
    answer are left in `deferred`, for one statement for the whole batch."""
    if payment is None:
        return spec.missing()
    if spec.event is not None and first_seen is not None:
        read: Any = spec.event in first_seen
    else:
        read = await spec.read(store, payment)
    decided = spec.decide(payment, read)
    if isinstance(decided, Unchanged):
        return decided.value
    answer = _answer_of(spec, payment)
    if deferred is not None and spec.then is None and not payment.settles_refund():
        deferred.saves.append(payment)
        deferred.answers += [answer] if answer is not None else []
        return decided
    await save_settling_refunds(store, payment)
    if answer is not None:
        await store.answer_claims([answer])
    if spec.then is not None:
        await spec.then(store, decided)
    return decided


@dataclass(slots=True)
class _Deferred:
    """A batch's plain saves and key answers, written once for the whole batch (with the
    saved payments' outbox rows)."""

    saves: list[Payment] = field(default_factory=list)
    answers: list[ClaimAnswer] = field(default_factory=list)

    async def write(self, store: PaymentStore) -> None:
        await store.save_many(self.saves, self.answers)


def _answer_of(spec: _Step[Any, Any], payment: Payment) -> ClaimAnswer | None:
    if spec.answer is None:
        return None
    reason, message = spec.answer
    return ClaimAnswer(payment.payment_id, payment.version, reason, message)


def _reactions(batch: dict[str, Job]) -> dict[str, tuple[str, str]]:
    """The event each reaction of the batch reacts to, by its payment."""
    return {payment_id: job.spec.event for payment_id, job in batch.items() if job.spec.event}


class Steps:
    """`step` and `step_with` with group commit (see the module's docstring), and a grouped
    read of a payment as it stands (`peek`). With `group_commit` off each runs alone."""

    def __init__(
        self,
        uow: Callable[[], UnitOfWork],
        *,
        reader: Callable[[], UnitOfWork] | None = None,
        group_commit: bool = True,
        max_batch: int = 32,
    ) -> None:
        self._uow = uow
        # For `peek`: a unit of work that only reads (autocommit where the adapter has it).
        self._reader = reader or uow
        self._grouped = group_commit
        self._steps = GroupCommit(self._run_batch, self._run_alone, max_batch=max_batch)
        self._reads = GroupCommit(self._read_batch, self._read_alone, max_batch=max_batch)

    async def step(
        self,
        payment_id: str,
        decide: Callable[[Payment], T | Unchanged[T]],
        *,
        missing: Callable[[], T] | None = None,
        then: Callable[[PaymentStore, T], Awaitable[None]] | None = None,
        answer: tuple[str, str] | None = None,
    ) -> T:
        """`answer`: the payment as the step leaves it becomes the response of the key that
        made it, with this refusal (reason, message), or ("", "") for none."""
        return await self.step_with(
            payment_id,
            _read_nothing,
            lambda payment, _: decide(payment),
            missing=missing,
            then=then,
            answer=answer,
        )

    async def step_with(
        self,
        payment_id: str,
        read: Callable[[PaymentStore, Payment], Awaitable[R]],
        decide: Callable[[Payment, R], T | Unchanged[T]],
        *,
        missing: Callable[[], T] | None = None,
        then: Callable[[PaymentStore, T], Awaitable[None]] | None = None,
        answer: tuple[str, str] | None = None,
    ) -> T:
        spec = _Step(
            payment_id, read, decide, missing or _not_found(payment_id), then, answer=answer
        )
        if not self._grouped:
            return await retry_on_conflict(lambda: _attempt(self._uow, spec))
        return cast(T, await self._steps.submit(spec))

    async def react(
        self,
        payment_id: str,
        event: tuple[str, str],
        decide: Callable[[Payment], None],
        *,
        missing: Callable[[], None],
    ) -> None:
        """A step reacting to `event` (consumer, event_id): the event is recorded processed
        under the payment's lock, in the step's transaction, and a redelivery changes
        nothing (exactly-once effect over at-least-once delivery)."""
        consumer, event_id = event

        async def first_delivery(store: PaymentStore, _: Payment) -> bool:
            return await store.mark_processed(consumer, event_id)

        def react(payment: Payment, first: bool) -> Unchanged[None] | None:
            if not first:
                return Unchanged(None)
            decide(payment)
            return None

        spec = _Step(payment_id, first_delivery, react, missing, None, event)
        if not self._grouped:
            await retry_on_conflict(lambda: _attempt(self._uow, spec))
            return
        await self._steps.submit(spec)

    async def peek(self, payment_id: str) -> Payment | None:
        """The payment as committed now, without its lock: the read before a call to another
        service, whose answer a later step decides on under the lock."""
        if not self._grouped:
            return await self._get(payment_id)
        return cast(Payment | None, await self._reads.submit(payment_id))

    # -- group commit ---------------------------------------------------------------------

    async def _run_batch(self, jobs: list[Job]) -> None:
        # One step per payment in a transaction: another for the same payment (two consumers'
        # events about it at once) runs alone after the batch, and sees what it did.
        batch, later = first_per_key(jobs, lambda spec: spec.payment_id)
        if len(batch) == 1:
            await self._run_alone(jobs)
            return
        async with self._uow() as unit:
            store = unit.payments
            locked, first_seen = await store.lock_many(list(batch), _reactions(batch))
            deferred = _Deferred()
            answers = [
                (job, await _apply(store, job.spec, locked.get(payment_id), first_seen, deferred))
                for payment_id, job in batch.items()
            ]
            await deferred.write(store)
            await unit.commit()
        for job, answer in answers:
            job.settle(answer)
        await self._run_alone(later)

    async def _run_alone(self, jobs: list[Job]) -> None:
        for job in jobs:
            spec: _Step[Any, Any] = job.spec
            try:
                job.settle(await retry_on_conflict(lambda: _attempt(self._uow, spec)))  # noqa: B023 - awaited before the loop moves on
            except Exception as exc:  # the step's own answer, raised to its caller
                job.fail(exc)

    async def _read_batch(self, jobs: list[Job]) -> None:
        if len(jobs) == 1:
            await self._read_alone(jobs)
            return
        async with self._reader() as unit:
            found = await unit.payments.get_many([job.spec for job in jobs])
            await unit.commit()  # not ROLLBACK, which drops the prepared statements
        for job in jobs:
            job.settle(found.get(job.spec))

    async def _read_alone(self, jobs: list[Job]) -> None:
        for job in jobs:
            try:
                job.settle(await self._get(job.spec))
            except Exception as exc:  # the reader's own answer
                job.fail(exc)

    async def _get(self, payment_id: str) -> Payment | None:
        async with self._reader() as unit:
            payment = await unit.payments.get(payment_id)
            # A read ends with COMMIT: on ROLLBACK psycopg drops the connection's prepared
            # statements, and every later statement on it is parsed again.
            await unit.commit()
        return payment

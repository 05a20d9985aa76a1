"""The gateway's two hot writes, alone or grouped: recording a new operation, and changing one.

Every Charge and Payout costs both: the operation is recorded CREATED before the provider is
asked, and the provider's answer is recorded after. Under load 16-32 of them run at once, and
each paid its own BEGIN, COMMIT and round trips. With group commit (common/group_commit.py)
requests that arrive together share them: one multi-row insert for the new operations, one
locking read and one multi-row save for the changes, one commit per batch. Each request still
gets its own answer, and a batch that fails as a whole runs each of its requests again alone,
on the single-request path with its retries (`retry_on_conflict`).

Refunds are never grouped: each locks its charge and checks the charge's refund total, which
a neighbour in the same batch could change (see Operations._record).

The provider's answer is recorded by the request that asked, which holds the operation as it
saved it. Such a change that emits no event (accepted: `pending`, routed, unsent) is saved
without the lock, only while the row is still at the version the request holds, in one
autocommit statement for the answers that arrive together: BEGIN, the locking read, the save
and COMMIT were four round trips where one does. A row that moved on meanwhile (a webhook
was faster) is decided again under the lock, as any other update.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from common.errors import ConcurrentUpdate, IdempotencyConflict, NotFound, retry_on_conflict
from common.group_commit import GroupCommit, Job, first_per_key
from common.money import Money
from gateway_service.domain.model import Operation, OperationKind
from gateway_service.service_layer.ports import UnitOfWorkFactory

Change = Callable[[Operation], object]


@dataclass(frozen=True, slots=True)
class OpenRequest:
    kind: OperationKind
    idempotency_key: str
    amount: Money
    instrument: str
    reference: str
    # The first in failover order; for a refund the charge's, as only it can refund it.
    provider: str
    parent_operation_id: str | None = None

    def open(self) -> Operation:
        return Operation.open(
            kind=self.kind,
            idempotency_key=self.idempotency_key,
            amount=self.amount,
            instrument=self.instrument,
            reference=self.reference,
            provider=self.provider,
            parent_operation_id=self.parent_operation_id,
        )


@dataclass(frozen=True, slots=True)
class Update:
    operation_id: str
    change: Change


@dataclass(frozen=True, slots=True)
class KnownUpdate:
    """A change already applied to the operation as its request last saved it (`changed`),
    and the version that request saw (`previous`)."""

    changed: Operation
    previous: int
    change: Change

    @property
    def operation_id(self) -> str:
        return self.changed.operation_id


def applied_to_copy(known: Operation, change: Change) -> Operation | None:
    """`change` applied to a copy of `known`, if it changes it and emits no event (an event
    needs its outbox row in the same transaction: that change goes under the lock)."""
    changed = replace(known, _events=[], history=list(known.history))
    if not change(changed) or changed.pull_events():
        return None
    return changed


def replayed(existing: Operation, request: OpenRequest) -> Operation:
    """The operation a taken key names, if it was asked for the same thing."""
    if not existing.same_request(
        kind=request.kind,
        amount=request.amount,
        instrument=request.instrument,
        reference=request.reference,
    ):
        raise IdempotencyConflict(
            f"idempotency_key {existing.idempotency_key!r} was already used for a different"
            " operation"
        )
    return existing


async def update_operation(uow: UnitOfWorkFactory, operation_id: str, change: Change) -> Operation:
    """Applies `change` under the operation's row lock; saved when it returns truthy. Every
    change to an existing operation outside the provider-event inbox goes through here, or
    through GroupedWrites.update, which falls back to it."""

    async def attempt() -> Operation:
        async with uow() as unit:
            operation = await unit.operations.get(operation_id, for_update=True)
            if operation is None:
                raise NotFound("operation", operation_id)
            if change(operation):
                await unit.operations.save(operation)
                await unit.commit()
            return operation

    return await retry_on_conflict(attempt)


class GroupedWrites:
    """Records and updates that arrive together share one transaction per batch."""

    def __init__(
        self, uow: UnitOfWorkFactory, *, record_alone: Callable[[OpenRequest], Awaitable[Operation]]
    ) -> None:
        self._uow = uow
        self._record_alone = record_alone
        self._records = GroupCommit(self._record_batch, self._run_record_alone)
        self._updates = GroupCommit(self._update_batch, self._run_update_alone)
        self._known_updates = GroupCommit(self._known_update_batch, self._run_update_alone)

    async def record(self, request: OpenRequest) -> Operation:
        """The new operation committed CREATED, or the one its key already names."""
        recorded: Operation = await self._records.submit(request)
        return recorded

    async def update(
        self, operation_id: str, change: Change, *, known: Operation | None = None
    ) -> Operation:
        """As update_operation, sharing the transaction with other updates. `known`: the
        operation as this request last saved it, whose change may then be saved without the
        lock (see the module's docstring)."""
        if known is not None and (changed := applied_to_copy(known, change)) is not None:
            saved: Operation = await self._known_updates.submit(
                KnownUpdate(changed, known.version, change)
            )
            return saved
        updated: Operation = await self._updates.submit(Update(operation_id, change))
        return updated

    async def _record_batch(self, jobs: list[Job]) -> None:
        requests: list[OpenRequest] = [job.spec for job in jobs]
        async with self._uow() as uow:
            opened = [request.open() for request in requests]
            inserted, existing = await uow.record_new(opened)
            answers = [
                _answer(request, operation, inserted, existing)
                for request, operation in zip(requests, opened, strict=True)
            ]
        for job, answer in zip(jobs, answers, strict=True):
            if isinstance(answer, IdempotencyConflict):
                job.fail(answer)
            else:
                job.settle(answer)

    async def _run_record_alone(self, jobs: list[Job]) -> None:
        (job,) = jobs
        job.settle(await retry_on_conflict(lambda: self._record_alone(job.spec)))

    async def _update_batch(self, jobs: list[Job]) -> None:
        # Two changes to one operation in one batch would each lock and save it from the same
        # read: the later one runs after the batch, alone, and sees what the first did.
        first, later = first_per_key(jobs, lambda update: update.operation_id)
        batch = list(first.values())
        async with self._uow() as uow:
            locked = await uow.operations.get_many(
                [job.spec.operation_id for job in batch], for_update=True
            )
            # The changed operations are saved together, in one statement, after every change.
            changed = [operation for job in batch if (operation := _apply(locked, job.spec))]
            await uow.operations.save_many(changed)
            await uow.commit()
        for job in batch:
            job.settle(locked[job.spec.operation_id])
        for job in later:
            await self._settle_alone(job)

    async def _known_update_batch(self, jobs: list[Job]) -> None:
        first, later = first_per_key(jobs, lambda update: update.operation_id)
        batch = list(first.values())
        async with self._uow() as uow:
            saved = await uow.save_unchanged(
                [(job.spec.changed, job.spec.previous) for job in batch]
            )
        for job in batch:
            if job.spec.operation_id in saved:
                job.settle(job.spec.changed)
            else:  # moved on since its request saw it: decided again under the lock
                later.append(job)
        for job in later:
            await self._settle_alone(job)

    async def _run_update_alone(self, jobs: list[Job]) -> None:
        (job,) = jobs
        update: Update | KnownUpdate = job.spec
        job.settle(await update_operation(self._uow, update.operation_id, update.change))

    async def _settle_alone(self, job: Job) -> None:
        try:
            await self._run_update_alone([job])
        except Exception as exc:  # this request's own answer; its batch has committed
            job.fail(exc)


def _answer(
    request: OpenRequest,
    opened: Operation,
    inserted: set[str],
    existing: dict[str, Operation],
) -> Operation | IdempotencyConflict:
    """A reused key with other terms is that request's answer, not its batch's failure."""
    if opened.operation_id in inserted:
        return opened
    found = existing.get(request.idempotency_key)
    if found is None:  # the key's holder is gone again: the batch reruns each request alone
        raise ConcurrentUpdate("the operation with this key vanished")
    try:
        return replayed(found, request)
    except IdempotencyConflict as exc:
        return exc


def _apply(locked: dict[str, Operation], update: Update) -> Operation | None:
    """The update applied to its locked operation; that operation if it is to be saved."""
    operation = locked.get(update.operation_id)
    if operation is None:
        # Raised, not answered: the batch rolls back and each request runs again alone, so
        # each gets its own answer (NotFound for this one only) from its own transaction.
        raise NotFound("operation", update.operation_id)
    return operation if update.change(operation) else None

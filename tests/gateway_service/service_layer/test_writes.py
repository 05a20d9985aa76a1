"""Group commit of the gateway's records and updates over the in-memory fakes: requests that
arrive together commit once, each still gets its own answer, and a batch that cannot commit
runs each request alone."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from common.errors import IdempotencyConflict, NotFound
from common.ids import new_id
from common.money import Money
from gateway_service.domain.model import Operation, OperationKind, OperationStatus
from gateway_service.service_layer.writes import (
    GroupedWrites,
    OpenRequest,
    applied_to_copy,
    replayed,
)
from tests.gateway_service.conftest import (
    EUR_12_50,
    PAYMENT_METHOD,
    PRIMARY,
    FakeDatabase,
    FakeUnitOfWork,
)


def request(key: str, amount: Money = EUR_12_50) -> OpenRequest:
    return OpenRequest(
        kind=OperationKind.CHARGE,
        idempotency_key=key,
        amount=amount,
        instrument=PAYMENT_METHOD,
        reference=key,
        provider=PRIMARY,
    )


class Writes:
    """GroupedWrites on the fakes, with a single-request path that says when it ran."""

    def __init__(self, fake_db: FakeDatabase) -> None:
        self.db = fake_db
        self.alone: list[str] = []
        self.writes = GroupedWrites(lambda: FakeUnitOfWork(fake_db), record_alone=self._alone)

    async def _alone(self, open_request: OpenRequest) -> Operation:
        self.alone.append(open_request.idempotency_key)
        async with FakeUnitOfWork(self.db) as uow:
            existing = await uow.operations.find_by_idempotency_key(open_request.idempotency_key)
            if existing is not None:
                return replayed(existing, open_request)
            operation = open_request.open()
            await uow.operations.add(operation)
            await uow.commit()
            return operation

    async def stored(self, key: str) -> Operation:
        operation = await self.writes.record(request(key))
        self.db.commits = 0
        return operation


@pytest.fixture
def writes(fake_db: FakeDatabase) -> Writes:
    return Writes(fake_db)


# -- records ------------------------------------------------------------------------------


async def test_records_arriving_together_commit_once(writes: Writes) -> None:
    first, second = await asyncio.gather(
        writes.writes.record(request("pay-1:charge")), writes.writes.record(request("pay-2:charge"))
    )

    assert writes.db.commits == 1
    assert {op.operation_id for op in (first, second)} == set(writes.db.operations)
    assert all(op.status is OperationStatus.CREATED for op in (first, second))
    assert writes.alone == []


async def test_a_key_twice_in_one_batch_is_one_operation(writes: Writes) -> None:
    first, twin = await asyncio.gather(
        writes.writes.record(request("pay-1:charge")), writes.writes.record(request("pay-1:charge"))
    )

    assert first.operation_id == twin.operation_id
    assert len(writes.db.operations) == 1
    assert writes.db.commits == 1


async def test_a_reused_key_answers_only_its_own_request(writes: Writes) -> None:
    existing = await writes.stored("pay-1:charge")

    answers = await asyncio.gather(
        writes.writes.record(request("pay-1:charge", Money(999, "EUR"))),
        writes.writes.record(request("pay-1:charge")),
        writes.writes.record(request("pay-2:charge")),
        return_exceptions=True,
    )

    conflict, replay, new = answers
    assert isinstance(conflict, IdempotencyConflict)
    assert isinstance(replay, Operation)
    assert replay.operation_id == existing.operation_id
    assert isinstance(new, Operation)
    assert new.operation_id in writes.db.operations
    # The refusal was an answer, not the batch's failure: one commit, nothing rerun.
    assert (writes.db.commits, writes.alone) == (1, [])


async def test_a_record_batch_that_cannot_commit_runs_each_request_alone(writes: Writes) -> None:
    # Another request takes the key between the batch's insert and its read: the batch
    # cannot answer that request, so each of its requests is run again on its own.
    winner = request("pay-1:charge").open()
    writes.db.racing_insert = winner

    first, second = await asyncio.gather(
        writes.writes.record(request("pay-1:charge")), writes.writes.record(request("pay-2:charge"))
    )

    assert first.operation_id == winner.operation_id
    assert second.operation_id in writes.db.operations
    assert sorted(writes.alone) == ["pay-1:charge", "pay-2:charge"]
    assert len(writes.db.operations) == 2


# -- updates ------------------------------------------------------------------------------


def accept(reference: str) -> Callable[[Operation], bool]:
    return lambda operation: operation.mark_accepted(reference)


async def test_updates_arriving_together_lock_once_and_commit_once(writes: Writes) -> None:
    first = await writes.stored("pay-1:charge")
    second = await writes.stored("pay-2:charge")

    updated = await asyncio.gather(
        writes.writes.update(first.operation_id, accept("ch_1")),
        writes.writes.update(second.operation_id, accept("ch_2")),
    )

    assert [(op.status, op.provider_reference) for op in updated] == [
        (OperationStatus.PENDING, "ch_1"),
        (OperationStatus.PENDING, "ch_2"),
    ]
    assert writes.db.commits == 1
    assert writes.db.operations[second.operation_id].status is OperationStatus.PENDING


async def test_an_unchanged_operation_is_answered_as_it_is(writes: Writes) -> None:
    operation = await writes.stored("pay-1:charge")

    same = await writes.writes.update(operation.operation_id, lambda _: False)

    assert (same.operation_id, same.version) == (operation.operation_id, operation.version)
    assert writes.db.history[operation.operation_id][-1].status is OperationStatus.CREATED


async def test_two_updates_of_one_operation_run_one_after_the_other(writes: Writes) -> None:
    operation = await writes.stored("pay-1:charge")

    unknown, accepted = await asyncio.gather(
        writes.writes.update(operation.operation_id, Operation.mark_unknown),
        writes.writes.update(operation.operation_id, accept("ch_1")),
    )

    # The second saw what the first saved: its change applies on top, never beside it.
    assert (unknown.version, accepted.version) == (2, 3)
    assert [h.status for h in writes.db.history[operation.operation_id]] == [
        OperationStatus.CREATED,
        OperationStatus.CREATED,
        OperationStatus.PENDING,
    ]
    assert writes.db.commits == 2


async def test_an_update_batch_that_fails_answers_each_request_alone(writes: Writes) -> None:
    operation = await writes.stored("pay-1:charge")
    missing = new_id()

    answers = await asyncio.gather(
        writes.writes.update(missing, accept("ch_0")),
        writes.writes.update(operation.operation_id, accept("ch_1")),
        return_exceptions=True,
    )

    missed, applied = answers
    assert isinstance(missed, NotFound)
    assert isinstance(applied, Operation)
    assert applied.status is OperationStatus.PENDING
    # The batch rolled back; alone, the request that could be applied was, in its own commit.
    assert writes.db.commits == 1
    assert writes.db.operations[operation.operation_id].provider_reference == "ch_1"


# -- answers to the request that holds the operation ------------------------------------------


async def test_an_answer_to_the_operation_as_saved_is_saved_without_the_lock(
    writes: Writes,
) -> None:
    held = await writes.stored("pay-1:charge")

    saved = await writes.writes.update(
        held.operation_id, lambda op: op.mark_accepted("ref-1"), known=held
    )

    assert (saved.status, saved.provider_reference) == (OperationStatus.PENDING, "ref-1")
    stored = writes.db.operations[held.operation_id]
    assert (stored.status, stored.version) == (OperationStatus.PENDING, saved.version)
    assert [entry.status for entry in writes.db.history[held.operation_id]] == [
        OperationStatus.CREATED,
        OperationStatus.PENDING,
    ]
    assert writes.db.commits == 1
    assert held.status is OperationStatus.CREATED  # the request's own copy is not changed


async def test_an_answer_to_an_operation_moved_on_is_decided_again_under_the_lock(
    writes: Writes,
) -> None:
    held = await writes.stored("pay-1:charge")
    webhook = await writes.writes.update(
        held.operation_id,
        lambda op: op.apply_provider_outcome(
            kind=OperationKind.CHARGE,
            outcome=OperationStatus.SUCCEEDED,
            failure_reason="",
            provider_event_id="evt-1",
            provider_reference="ref-1",
        ),
    )

    late = await writes.writes.update(
        held.operation_id, lambda op: op.mark_accepted("ref-1"), known=held
    )

    assert late.status is OperationStatus.SUCCEEDED
    assert writes.db.operations[held.operation_id].version == webhook.version


async def test_a_change_that_emits_an_event_takes_the_lock(writes: Writes) -> None:
    held = await writes.stored("pay-1:charge")

    assert applied_to_copy(held, Operation.mark_unknown) is None
    assert applied_to_copy(held, lambda op: op.mark_accepted("ref-1")) is not None
    unknown = await writes.writes.update(held.operation_id, Operation.mark_unknown, known=held)

    assert unknown.outcome_unknown
    assert [type(event).__name__ for event in writes.db.published] == ["OperationOutcomeUnknown"]

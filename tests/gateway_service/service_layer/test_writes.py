"""GroupedWrites over the in-memory fakes: a change to the operation its request last saved
is saved without the lock while the row is still at that version, and decided again under
the lock once another writer moved it on; a change that emits an event always takes the
lock, since its outbox row needs the transaction."""

from __future__ import annotations

from gateway_service.domain.model import Operation, OperationKind, OperationStatus
from gateway_service.service_layer.writes import GroupedWrites, OpenRequest, applied_to_copy
from tests.gateway_service.conftest import (
    EUR_12_50,
    PAYMENT_METHOD,
    PRIMARY,
    FakeDatabase,
    FakeUnitOfWork,
)


def _writes(fake_db: FakeDatabase) -> GroupedWrites:
    async def record_alone(request: OpenRequest) -> Operation:
        raise AssertionError("not expected to run alone")

    return GroupedWrites(lambda: FakeUnitOfWork(fake_db), record_alone=record_alone)


async def _recorded(writes: GroupedWrites) -> Operation:
    return await writes.record(
        OpenRequest(
            kind=OperationKind.CHARGE,
            idempotency_key="pay-1:charge",
            amount=EUR_12_50,
            instrument=PAYMENT_METHOD,
            reference="pay-1",
            provider=PRIMARY,
        )
    )


async def test_an_answer_to_the_operation_as_saved_is_saved_without_the_lock(
    fake_db: FakeDatabase,
) -> None:
    writes = _writes(fake_db)
    held = await _recorded(writes)
    commits = fake_db.commits

    saved = await writes.update(held.operation_id, lambda op: op.mark_accepted("ref-1"), known=held)

    assert (saved.status, saved.provider_reference) == (OperationStatus.PENDING, "ref-1")
    stored = fake_db.operations[held.operation_id]
    assert (stored.status, stored.version) == (OperationStatus.PENDING, saved.version)
    assert [entry.status for entry in fake_db.history[held.operation_id]] == [
        OperationStatus.CREATED,
        OperationStatus.PENDING,
    ]
    assert fake_db.commits == commits + 1
    assert held.status is OperationStatus.CREATED  # the request's own copy is not changed


async def test_an_answer_to_an_operation_moved_on_is_decided_again_under_the_lock(
    fake_db: FakeDatabase,
) -> None:
    writes = _writes(fake_db)
    held = await _recorded(writes)
    webhook = await writes.update(
        held.operation_id,
        lambda op: op.apply_provider_outcome(
            kind=OperationKind.CHARGE,
            outcome=OperationStatus.SUCCEEDED,
            failure_reason="",
            provider_event_id="evt-1",
            provider_reference="ref-1",
        ),
    )

    late = await writes.update(held.operation_id, lambda op: op.mark_accepted("ref-1"), known=held)

    assert late.status is OperationStatus.SUCCEEDED
    assert fake_db.operations[held.operation_id].version == webhook.version


async def test_a_change_that_emits_an_event_takes_the_lock(fake_db: FakeDatabase) -> None:
    writes = _writes(fake_db)
    held = await _recorded(writes)

    assert applied_to_copy(held, Operation.mark_unknown) is None
    assert applied_to_copy(held, lambda op: op.mark_accepted("ref-1")) is not None
    unknown = await writes.update(held.operation_id, Operation.mark_unknown, known=held)

    assert unknown.outcome_unknown
    assert [type(event).__name__ for event in fake_db.published] == ["OperationOutcomeUnknown"]

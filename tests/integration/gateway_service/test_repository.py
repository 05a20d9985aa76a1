"""The gateway's repositories register every operation they hand out or add with the unit of
work, so a change's events reach the outbox in its transaction without any hand-written
`track` (a forgotten one would be a lost event)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from common import db
from common.config import Settings
from common.errors import ConcurrentUpdate
from gateway_service.adapters.uow import GatewayUnitOfWork
from gateway_service.bootstrap import DATABASE
from gateway_service.domain.model import (
    Operation,
    OperationKind,
    OperationStatus,
    ProviderEvent,
    ProviderEventStatus,
)
from tests.gateway_service.conftest import EUR_12_50, PAYMENT_METHOD, PRIMARY

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(loop_scope="session")
async def engine(migrated: Settings) -> AsyncIterator[AsyncEngine]:
    engine = db.create_engine(DATABASE.url(migrated), pool_size=2)
    yield engine
    await engine.dispose()


def succeed(operation: Operation, provider_event_id: str, provider_reference: str) -> None:
    """The provider's word that a charge succeeded, applied as the inbox applies it."""
    operation.apply_provider_outcome(
        kind=OperationKind.CHARGE,
        outcome=OperationStatus.SUCCEEDED,
        failure_reason="",
        provider_event_id=provider_event_id,
        provider_reference=provider_reference,
    )


async def outbox_types(engine: AsyncEngine, operation_id: str) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT event_type FROM outbox WHERE aggregate_id = :a ORDER BY id"),
            {"a": operation_id},
        )
        return [row.event_type for row in rows]


def new_operation() -> Operation:
    key = f"pay-{uuid.uuid4()}:charge"
    return Operation.open(
        kind=OperationKind.CHARGE,
        idempotency_key=key,
        amount=EUR_12_50,
        instrument=PAYMENT_METHOD,
        reference=key,
        provider=PRIMARY,
    )


async def test_what_is_added_or_loaded_reaches_the_outbox_at_commit(engine: AsyncEngine) -> None:
    operation = new_operation()
    async with GatewayUnitOfWork(engine) as uow:
        assert await uow.operations.add_new(operation)
        operation.mark_unknown()
        await uow.commit()

    async with GatewayUnitOfWork(engine) as uow:
        loaded = await uow.operations.get(operation.operation_id, for_update=True)
        assert loaded is not None
        loaded.mark_accepted("ch_registered")
        await uow.operations.save(loaded)
        await uow.commit()

    async with GatewayUnitOfWork(engine) as uow:
        [locked] = await uow.operations.lock_for_events([(PRIMARY, "ch_registered")], [])
        succeed(locked, "evt_registered", "ch_registered")
        await uow.operations.save(locked)
        await uow.commit()

    assert await outbox_types(engine, operation.operation_id) == [
        "operation.unknown",
        "charge.succeeded",
    ]


async def test_add_many_inserts_the_free_keys_once_and_batch_reads_find_them(
    engine: AsyncEngine,
) -> None:
    taken, new = new_operation(), new_operation()
    async with GatewayUnitOfWork(engine) as uow:
        assert await uow.operations.add_new(taken)
        await uow.commit()
    twin = Operation.open(
        kind=OperationKind.CHARGE,
        idempotency_key=new.idempotency_key,
        amount=EUR_12_50,
        instrument=PAYMENT_METHOD,
        reference=new.reference,
        provider=PRIMARY,
    )
    retry = Operation.open(
        kind=OperationKind.CHARGE,
        idempotency_key=taken.idempotency_key,
        amount=EUR_12_50,
        instrument=PAYMENT_METHOD,
        reference=taken.reference,
        provider=PRIMARY,
    )

    async with GatewayUnitOfWork(engine) as uow:
        inserted = await uow.operations.add_many([new, retry, twin])
        by_key = await uow.operations.find_by_idempotency_keys(
            [taken.idempotency_key, new.idempotency_key]
        )
        await uow.commit()

    assert inserted == {new.operation_id}
    assert new.created_at is not None
    assert {key: op.operation_id for key, op in by_key.items()} == {
        taken.idempotency_key: taken.operation_id,
        new.idempotency_key: new.operation_id,
    }
    async with GatewayUnitOfWork(engine) as uow:
        locked = await uow.operations.get_many(
            [new.operation_id, taken.operation_id, twin.operation_id], for_update=True
        )
        assert set(locked) == {new.operation_id, taken.operation_id}
        assert [h.status for h in await uow.operations.history(new.operation_id)] == [
            OperationStatus.CREATED
        ]


async def test_save_many_writes_every_row_and_its_history_in_one_statement(
    engine: AsyncEngine,
) -> None:
    accepted, rejected, unknown = new_operation(), new_operation(), new_operation()
    cleared = new_operation()
    everything = [accepted, rejected, unknown, cleared]
    async with GatewayUnitOfWork(engine) as uow:
        assert await uow.operations.add_many(everything) == {o.operation_id for o in everything}
        await uow.commit()
    reference = f"psp-{uuid.uuid4()}"

    async with GatewayUnitOfWork(engine) as uow:
        locked = await uow.operations.get_many(
            [o.operation_id for o in everything], for_update=True
        )
        assert locked[accepted.operation_id].mark_accepted(reference)
        assert locked[cleared.operation_id].mark_unsent()
        assert locked[rejected.operation_id].mark_rejected("card_declined")
        assert locked[unknown.operation_id].mark_unknown()
        await uow.operations.save_many(list(locked.values()))
        await uow.commit()
    assert all(operation.updated_at is not None for operation in locked.values())

    async with GatewayUnitOfWork(engine) as uow:
        stored = await uow.operations.get_many(list(locked))
        histories = {op_id: await uow.operations.history(op_id) for op_id in locked}
    for op_id, operation in locked.items():
        assert stored[op_id].status == operation.status
        assert stored[op_id].version == operation.version
        assert stored[op_id].outcome_unknown == operation.outcome_unknown
        assert stored[op_id].failover_clear == operation.failover_clear
        assert [h.status for h in histories[op_id]] == [OperationStatus.CREATED, operation.status]
    assert stored[accepted.operation_id].provider_reference == reference
    assert stored[rejected.operation_id].failure_reason == "card_declined"
    assert histories[accepted.operation_id][-1].provider_reference == reference
    assert histories[unknown.operation_id][-1].outcome_unknown
    assert stored[cleared.operation_id].failover_clear


async def test_save_keeps_whether_an_operation_may_fail_over(engine: AsyncEngine) -> None:
    operation = new_operation()
    async with GatewayUnitOfWork(engine) as uow:
        assert await uow.operations.add_new(operation)
        await uow.commit()
    assert operation.may_fail_over  # opened here

    # Cleared by a round of "not processed", then about to be asked again.
    for clear in (True, False):
        async with GatewayUnitOfWork(engine) as uow:
            stored = await uow.operations.get(operation.operation_id, for_update=True)
            assert stored is not None
            assert stored.mark_unsent() if clear else stored.route_to(stored.provider)
            await uow.operations.save(stored)
            await uow.commit()
        async with GatewayUnitOfWork(engine) as uow:
            read = await uow.operations.get(operation.operation_id)
        assert read is not None
        assert (read.failover_clear, read.may_fail_over) == (clear, clear)


async def test_save_many_with_an_operation_gone_keeps_nothing_and_raises(
    engine: AsyncEngine,
) -> None:
    first, second = new_operation(), new_operation()
    gone = new_operation()  # never stored: its row is missing, as a vanished one's would be
    async with GatewayUnitOfWork(engine) as uow:
        await uow.operations.add_many([first, second])
        await uow.commit()

    async with GatewayUnitOfWork(engine) as uow:  # left without commit: rolled back
        locked = await uow.operations.get_many(
            [first.operation_id, second.operation_id], for_update=True
        )
        for operation in (*locked.values(), gone):
            assert operation.mark_rejected("card_declined")
        with pytest.raises(ConcurrentUpdate):
            await uow.operations.save_many([*locked.values(), gone])

    async with GatewayUnitOfWork(engine) as uow:
        stored = await uow.operations.get_many([first.operation_id, second.operation_id])
        for op_id, operation in stored.items():
            assert operation.status == OperationStatus.CREATED
            assert operation.version == 1
            assert [h.status for h in await uow.operations.history(op_id)] == [
                OperationStatus.CREATED
            ]


def provider_event(reference: str, operation_id: str) -> ProviderEvent:
    return ProviderEvent(
        provider=PRIMARY,
        provider_event_id=f"evt_{uuid.uuid4().hex}",
        event_type="charge.succeeded",
        provider_reference=reference,
        failure_reason="",
        occurred_at=datetime.now(UTC),
        raw_payload=b"{}",
        operation_id=operation_id,
    )


async def test_events_and_the_operations_they_changed_are_recorded_in_one_statement(
    engine: AsyncEngine,
) -> None:
    changed, untouched = new_operation(), new_operation()
    async with GatewayUnitOfWork(engine) as uow:
        await uow.operations.add_many([changed, untouched])
        await uow.commit()
    reference = f"psp-{uuid.uuid4()}"
    applied = provider_event(reference, changed.operation_id)
    unmatched = provider_event(f"psp-{uuid.uuid4()}", "")

    async with GatewayUnitOfWork(engine) as uow:
        locked = await uow.operations.get_many([changed.operation_id], for_update=True)
        operation = locked[changed.operation_id]
        assert operation.mark_accepted(reference)
        inserted = await uow.provider_events.record(
            [
                (applied, operation.operation_id, ProviderEventStatus.APPLIED),
                (unmatched, None, ProviderEventStatus.UNMATCHED),
            ],
            saving=[operation],
        )
        await uow.commit()
    assert inserted == {
        (PRIMARY, applied.provider_event_id),
        (PRIMARY, unmatched.provider_event_id),
    }
    assert operation.updated_at is not None

    async with GatewayUnitOfWork(engine) as uow:
        stored = await uow.operations.get_many([changed.operation_id, untouched.operation_id])
        history = await uow.operations.history(changed.operation_id)
        recorded = await uow.provider_events.recorded(
            [(PRIMARY, applied.provider_event_id), (PRIMARY, unmatched.provider_event_id)]
        )
    assert stored[changed.operation_id].status == OperationStatus.PENDING
    assert stored[changed.operation_id].provider_reference == reference
    assert stored[untouched.operation_id].status == OperationStatus.CREATED
    assert [h.status for h in history] == [OperationStatus.CREATED, OperationStatus.PENDING]
    assert recorded == {
        (PRIMARY, applied.provider_event_id): changed.operation_id,
        (PRIMARY, unmatched.provider_event_id): None,
    }

    # Delivered again: nothing inserted, which the inbox answers by rolling back.
    async with GatewayUnitOfWork(engine) as uow:
        again = await uow.provider_events.record([(unmatched, None, ProviderEventStatus.UNMATCHED)])
    assert again == set()


async def test_an_operation_gone_from_the_events_statement_raises(engine: AsyncEngine) -> None:
    gone = new_operation()  # never stored
    assert gone.mark_accepted("psp-gone")
    async with GatewayUnitOfWork(engine) as uow:
        with pytest.raises(ConcurrentUpdate):
            await uow.provider_events.record(
                [(provider_event("psp-gone", ""), None, ProviderEventStatus.UNMATCHED)],
                saving=[gone],
            )


async def test_new_operations_are_recorded_by_one_statement_committed_on_its_own(
    migrated: Settings,
) -> None:
    """`record_new`: the operations whose key was free are durable without a commit, a taken
    key answers with its holder, nothing reaches the outbox, and the pool's connection comes
    back out of autocommit (the next unit's writes still wait for its commit)."""
    engine = db.create_engine(DATABASE.url(migrated), pool_size=1)
    try:
        held = new_operation()
        async with GatewayUnitOfWork(engine) as uow:
            await uow.operations.add(held)
            await uow.commit()
        fresh = new_operation()
        twin = Operation.open(
            kind=OperationKind.CHARGE,
            idempotency_key=held.idempotency_key,
            amount=EUR_12_50,
            instrument=PAYMENT_METHOD,
            reference="another",
            provider=PRIMARY,
        )
        async with GatewayUnitOfWork(engine) as uow:
            inserted, holders = await uow.record_new([fresh, twin])
        assert inserted == {fresh.operation_id}
        assert holders[held.idempotency_key].operation_id == held.operation_id
        assert await outbox_types(engine, fresh.operation_id) == []

        left = new_operation()
        async with GatewayUnitOfWork(engine) as uow:
            assert not uow.raw.autocommit
            await uow.operations.add(left)  # and no commit
        async with GatewayUnitOfWork(engine) as uow:
            found = [await uow.operations.get(op.operation_id) for op in (fresh, left)]
            await uow.commit()
        assert found[0] is not None
        assert found[0].status is OperationStatus.CREATED
        assert found[1] is None
    finally:
        await engine.dispose()


def accepted(answers: list[tuple[Operation, str]]) -> list[tuple[Operation, int]]:
    """Each operation moved on by the provider's answer (accepted under this reference), with
    the version it was read at: what `save_unchanged` takes."""
    saved = []
    for operation, reference in answers:
        previous = operation.version
        assert operation.mark_accepted(reference)
        saved.append((operation, previous))
    return saved


async def test_a_save_without_the_lock_applies_only_to_a_row_still_at_its_version(
    migrated: Settings,
) -> None:
    """`save_unchanged`: one autocommit statement saves each operation whose row is still at
    the version its caller saw, with its history entry; a row another writer moved on is left
    as that writer made it, and the pool's connection comes back out of autocommit."""
    engine = db.create_engine(DATABASE.url(migrated), pool_size=1)
    try:
        kept, raced = new_operation(), new_operation()
        async with GatewayUnitOfWork(engine) as uow:
            await uow.record_new([kept, raced])
        async with GatewayUnitOfWork(engine) as uow:  # a webhook settles `raced` first
            settled = await uow.operations.get(raced.operation_id, for_update=True)
            assert settled is not None
            succeed(settled, "evt-1", "ref-raced")
            await uow.operations.save(settled)
            await uow.commit()

        answers = accepted([(kept, "ref-kept"), (raced, "ref-late")])
        async with GatewayUnitOfWork(engine) as uow:
            saved = await uow.save_unchanged(answers)
        assert saved == {kept.operation_id}
        assert kept.updated_at is not None

        async with GatewayUnitOfWork(engine) as uow:
            assert not uow.raw.autocommit
            now_kept = await uow.operations.get(kept.operation_id)
            now_raced = await uow.operations.get(raced.operation_id)
            history = await uow.operations.history(kept.operation_id)
            await uow.commit()
        assert now_kept is not None
        assert (now_kept.status, now_kept.provider_reference, now_kept.version) == (
            OperationStatus.PENDING,
            "ref-kept",
            kept.version,
        )
        assert [entry.status for entry in history] == [
            OperationStatus.CREATED,
            OperationStatus.PENDING,
        ]
        assert now_raced is not None
        assert (now_raced.status, now_raced.provider_reference) == (
            OperationStatus.SUCCEEDED,
            "ref-raced",
        )
        assert await outbox_types(engine, kept.operation_id) == []
    finally:
        await engine.dispose()


async def save_unchanged(engine: AsyncEngine, answers: list[tuple[Operation, int]]) -> set[str]:
    async with GatewayUnitOfWork(engine) as uow:
        return await uow.save_unchanged(answers)


async def test_a_save_without_the_lock_takes_its_row_locks_in_id_order(migrated: Settings) -> None:
    """An unlocked save of two operations given the higher id first, while a webhook batch
    holds the lower and then asks for both (in id order, as it always locks): the save waits
    for the lower before it touches the higher, so the batch gets both at once. Locking in
    the order given, the two deadlocked, and PostgreSQL broke it only after a second."""
    engine = db.create_engine(DATABASE.url(migrated), pool_size=2)
    try:
        low, high = sorted((new_operation(), new_operation()), key=lambda o: o.operation_id)
        for operation in (high, low):  # the higher first in the table too, for any plan
            async with GatewayUnitOfWork(engine) as uow:
                await uow.record_new([operation])
        answers = accepted([(high, "ref-high"), (low, "ref-low")])
        async with GatewayUnitOfWork(engine) as webhook:
            await webhook.operations.lock_for_events([], [low.operation_id])
            save = asyncio.create_task(save_unchanged(engine, answers))
            await asyncio.sleep(0.3)  # the save is waiting for `low` by now
            started = time.monotonic()
            both = await webhook.operations.lock_for_events(
                [], [low.operation_id, high.operation_id]
            )
            waited = time.monotonic() - started
            await webhook.commit()
        assert len(both) == 2
        assert waited < 0.5  # well under deadlock_timeout
        assert await save == {low.operation_id, high.operation_id}
    finally:
        await engine.dispose()


async def test_an_outcome_recorded_with_its_event_has_its_outbox_row_in_that_statement(
    engine: AsyncEngine,
) -> None:
    """`record(saving=...)` writes the saved operations' events to the outbox itself: once,
    in its own statement (commit writes nothing more), and rolled back with it."""
    settled, abandoned = new_operation(), new_operation()
    async with GatewayUnitOfWork(engine) as uow:
        await uow.operations.add_many([settled, abandoned])
        await uow.commit()

    for operation, keep in ((settled, True), (abandoned, False)):
        reference = f"psp-{uuid.uuid4()}"
        event = provider_event(reference, operation.operation_id)
        async with GatewayUnitOfWork(engine) as uow:
            locked = (await uow.operations.get_many([operation.operation_id], for_update=True))[
                operation.operation_id
            ]
            succeed(locked, event.provider_event_id, reference)
            await uow.provider_events.record(
                [(event, operation.operation_id, ProviderEventStatus.APPLIED)], saving=[locked]
            )
            if keep:
                await uow.commit()

    assert await outbox_types(engine, settled.operation_id) == ["charge.succeeded"]
    assert await outbox_types(engine, abandoned.operation_id) == []

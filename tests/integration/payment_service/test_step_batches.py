"""A group commit of saga steps on a real PostgreSQL, statement by statement: the steps that
arrive together are BEGIN, one statement that locks their payments and records the events
their reactions react to, one that saves the payments with their outbox rows, and COMMIT.
What a step saves on its own (a refund settling its deposit, a step with `then`) still
reaches the outbox through the commit, every event exactly once, and a batch that fails
leaves nothing of itself behind."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from common.config import Settings
from common.errors import ConcurrentUpdate
from common.money import Money
from common.uow import EventSource
from payment_service.adapters.event_mapping import to_outgoing
from payment_service.adapters.uow import PaymentUnitOfWork
from payment_service.domain.model import Payment
from payment_service.domain.requests import DepositRequest, RefundRequest
from payment_service.domain.status import PaymentStatus
from payment_service.service_layer.ports import PaymentStore
from payment_service.service_layer.steps import Steps, Unchanged

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

# (aggregate id, event type, aggregate version): an outbox row, or an event as it maps to one.
Row = tuple[str, str, int]


@dataclass
class Recorded:
    """What the units of work reported committed, and the statements sent to the database."""

    database: str
    events: list[Any] = field(default_factory=list)
    statements: list[str] = field(default_factory=list)
    commits: int = 0
    fail_next_commit: bool = False

    def clear(self) -> None:
        self.events.clear()
        self.statements.clear()
        self.commits = 0


@pytest.fixture(scope="module")
def batch_settings(base_settings: Settings) -> Iterator[Settings]:
    """A payments database of its own: no running saga consumer acts on these payments."""
    from common import db
    from payment_service.bootstrap import DATABASE

    settings = base_settings.model_copy(update={"database_prefix": f"b{uuid.uuid4().hex[:8]}_"})
    DATABASE.migrate(settings)
    yield settings
    db.drop_database(DATABASE.url(settings))


@pytest_asyncio.fixture(loop_scope="session")
async def engine(batch_settings: Settings) -> AsyncIterator[AsyncEngine]:
    from common import db
    from payment_service.bootstrap import DATABASE

    engine = db.create_engine(DATABASE.url(batch_settings), pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture
def recorded(engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> Recorded:
    """Every statement a cursor sends to this test's database and every COMMIT (psycopg sends
    BEGIN itself with a transaction's first statement)."""
    seen = Recorded(engine.url.database or "")
    execute, commit = psycopg.AsyncCursor.execute, psycopg.AsyncConnection.commit

    async def recording_execute(
        self: psycopg.AsyncCursor[Any], query: Any, *args: Any, **kw: Any
    ) -> Any:
        if self.connection.info.dbname == seen.database:
            seen.statements.append(str(query))
        return await execute(self, query, *args, **kw)

    async def recording_commit(self: psycopg.AsyncConnection[Any]) -> None:
        if self.info.dbname == seen.database:
            seen.commits += 1
        await commit(self)

    monkeypatch.setattr(psycopg.AsyncCursor, "execute", recording_execute)
    monkeypatch.setattr(psycopg.AsyncConnection, "commit", recording_commit)
    return seen


@pytest.fixture
def uow(engine: AsyncEngine, recorded: Recorded) -> Callable[[], PaymentUnitOfWork]:
    class Recording(PaymentUnitOfWork):
        async def commit(self) -> None:
            if recorded.fail_next_commit:
                recorded.fail_next_commit = False
                raise RuntimeError("the batch fails after its write")
            await super().commit()

        def committed(
            self, events: list[Any], aggregates: list[EventSource], *, wrote_outbox: bool
        ) -> None:
            recorded.events.extend(events)
            super().committed(events, aggregates, wrote_outbox=wrote_outbox)

    return lambda: Recording(engine)


def deposit() -> Payment:
    return Payment.deposit(
        DepositRequest(
            idempotency_key=f"k-{uuid.uuid4()}",
            account_id=str(uuid.uuid4()),
            amount=Money(1500, "USD"),
            payment_method="pm_card_ok",
        )
    )


async def added(uow: Callable[[], PaymentUnitOfWork], *payments: Payment) -> list[str]:
    async with uow() as u:
        for payment in payments:
            await u.payments.add(payment)
        await u.commit()
    return [payment.payment_id for payment in payments]


async def outbox_rows(engine: AsyncEngine, payment_ids: list[str], after: int = 0) -> list[Row]:
    """The outbox rows of these payments written after row `after`, in id order."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT aggregate_id, event_type, aggregate_version FROM outbox"
                " WHERE aggregate_id = ANY(:ids) AND id > :after ORDER BY id"
            ),
            {"ids": payment_ids, "after": after},
        )
        return [(row[0], row[1], row[2]) for row in rows]


async def last_outbox_id(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(
            (await conn.execute(text("SELECT coalesce(max(id), 0) FROM outbox"))).scalar_one()
        )


def as_rows(events: list[Any]) -> list[Row]:
    """The outbox rows these domain events make (the unit of work's own mapping)."""
    mapped = (to_outgoing(event) for event in events)
    return [
        (o.envelope.aggregate_id, o.envelope.event_type, o.envelope.aggregate_version)
        for o in mapped
        if o is not None
    ]


def in_aggregate_order(rows: list[Row]) -> bool:
    """Each aggregate's rows in version order (what the relay publishes them in)."""
    versions: dict[str, int] = {}
    for aggregate_id, _, version in rows:
        if version < versions.get(aggregate_id, 0):
            return False
        versions[aggregate_id] = version
    return True


def decline(payment: Payment) -> PaymentStatus:
    payment.fail("declined")
    return payment.status


async def statuses(uow: Callable[[], PaymentUnitOfWork], ids: list[str]) -> list[PaymentStatus]:
    async with uow() as u:
        found = await u.payments.get_many(ids)
        await u.commit()
    return [found[payment_id].status for payment_id in ids]


async def test_a_batch_of_reactions_is_a_lock_that_records_their_events_and_one_write(
    uow: Callable[[], PaymentUnitOfWork], engine: AsyncEngine, recorded: Recorded
) -> None:
    ids = await added(uow, *(deposit() for _ in range(4)))
    events = [str(uuid.uuid4()) for _ in ids]
    consumers = ["saga", "saga", "other", "other"]  # two consumers in one batch
    after = await last_outbox_id(engine)
    recorded.clear()
    steps = Steps(uow)
    await asyncio.gather(
        *(
            steps.react(p, (c, e), lambda payment: payment.fail("declined"), missing=lambda: None)
            for p, c, e in zip(ids, consumers, events, strict=True)
        )
    )
    # BEGIN rides on the first statement; then the lock with the processed events, the write
    # with the outbox rows, and COMMIT: no outbox insert, no processed_events insert.
    assert len(recorded.statements) == 2
    lock, write = recorded.statements
    assert "FOR UPDATE" in lock
    assert "INSERT INTO processed_events" in lock
    assert "UPDATE payments" in write
    assert "INSERT INTO outbox" in write
    assert recorded.commits == 1
    assert await statuses(uow, ids) == [PaymentStatus.FAILED] * 4
    rows = await outbox_rows(engine, ids, after)
    assert Counter(rows) == Counter(as_rows(recorded.events))
    assert [row for row in rows if row[1] == "payment.failed"] == [
        (payment_id, "payment.failed", 2) for payment_id in ids
    ]
    async with uow() as u:  # recorded: each delivered again changes nothing
        for consumer, event_id in zip(consumers, events, strict=True):
            assert not await u.payments.mark_processed(consumer, event_id)


async def test_an_event_already_processed_is_not_applied_again_beside_new_ones(
    uow: Callable[[], PaymentUnitOfWork], engine: AsyncEngine, recorded: Recorded
) -> None:
    ids = await added(uow, *(deposit() for _ in range(4)))
    seen, fresh = str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(2)]
    async with uow() as u:
        assert await u.payments.mark_processed("saga", seen)
        await u.commit()
    after = await last_outbox_id(engine)
    applied: list[str] = []

    def decline_noting(payment: Payment) -> None:
        applied.append(payment.payment_id)
        payment.fail("declined")

    reactions = [
        (ids[0], ("saga", seen)),  # a redelivery
        (ids[1], ("saga", fresh[0])),
        (ids[2], ("other", seen)),  # the same event, another consumer: new to it
        (ids[3], ("saga", fresh[1])),
    ]
    recorded.clear()
    steps = Steps(uow)
    await asyncio.gather(
        *(steps.react(p, e, decline_noting, missing=lambda: None) for p, e in reactions)
    )
    assert recorded.commits == 1
    assert sorted(applied) == sorted(ids[1:])
    assert await statuses(uow, ids) == [PaymentStatus.INITIATED] + [PaymentStatus.FAILED] * 3
    rows = await outbox_rows(engine, ids, after)
    assert {row[0] for row in rows} == set(ids[1:])
    assert Counter(rows) == Counter(as_rows(recorded.events))


async def test_a_batch_failing_after_its_write_keeps_neither_its_saves_nor_their_outbox_rows(
    uow: Callable[[], PaymentUnitOfWork], engine: AsyncEngine, recorded: Recorded
) -> None:
    ids = await added(uow, *(deposit() for _ in range(3)))
    after = await last_outbox_id(engine)
    async with uow() as u:
        locked, _ = await u.payments.lock_many(ids, {})
        for payment in locked.values():
            payment.fail("declined")
        recorded.clear()
        await u.payments.save_many(list(locked.values()))
        assert len(recorded.statements) == 1  # the saves and their outbox rows
        async with u.conn.begin_nested():  # seen inside the transaction, before its end
            written = await u.conn.execute(
                text("SELECT count(*) FROM outbox WHERE aggregate_id = ANY(:ids) AND id > :after"),
                {"ids": ids, "after": after},
            )
            assert written.scalar_one() == 3
        # Leaves without committing: rolled back.
    assert await statuses(uow, ids) == [PaymentStatus.INITIATED] * 3
    assert await outbox_rows(engine, ids, after) == []

    # Through the steps: the batch's commit fails after its write, so each step runs again
    # alone; every event reaches the outbox once, from the reruns.
    recorded.clear()
    recorded.fail_next_commit = True
    steps = Steps(uow)
    assert (
        await asyncio.gather(*(steps.step(p, decline) for p in ids)) == [PaymentStatus.FAILED] * 3
    )
    rows = await outbox_rows(engine, ids, after)
    assert Counter(rows) == Counter(as_rows(recorded.events))
    assert sorted(row for row in rows if row[1] == "payment.failed") == sorted(
        (payment_id, "payment.failed", 2) for payment_id in ids
    )


async def test_a_batch_write_adds_outbox_rows_of_the_payments_it_updated_only_in_order(
    uow: Callable[[], PaymentUnitOfWork], engine: AsyncEngine, recorded: Recorded
) -> None:
    ids = await added(uow, *(deposit() for _ in range(4)))
    after = await last_outbox_id(engine)
    async with uow() as u:
        locked, _ = await u.payments.lock_many(ids, {})
        first, second, untouched, _ = (locked[p] for p in ids)
        first.mark_pending("op-1")
        first.complete()
        second.fail("declined")
        recorded.clear()
        await u.payments.save_many([first, second, untouched])
        await u.commit()
    assert len(recorded.statements) == 1  # the commit sent no outbox insert
    rows = await outbox_rows(engine, ids, after)
    assert Counter(rows) == Counter(as_rows(recorded.events))
    assert {row[0] for row in rows} == {ids[0], ids[1]}
    assert in_aggregate_order(rows)
    # In the order they were given: the first payment's rows before the second's.
    assert [row[0] for row in rows] == sorted((row[0] for row in rows), key=ids.index)
    assert [row[1] for row in rows if row[1].startswith("payment.") and row[0] == ids[0]][-2:] == [
        "payment.pending",
        "payment.completed",
    ]

    # A payment moved meanwhile: the statement updates the others and writes their outbox
    # rows only, then the count refuses the batch and none of it is kept.
    async with uow() as u:
        stale = await u.payments.get_many(ids[2:])
    async with uow() as u:
        moved = await u.payments.get(ids[3], for_update=True)
        assert moved is not None
        moved.fail("declined")
        await u.payments.save(moved)
        await u.commit()
    after = await last_outbox_id(engine)
    async with uow() as u:
        for payment in stale.values():
            payment.fail("declined")
        with pytest.raises(ConcurrentUpdate):
            await u.payments.save_many(list(stale.values()))
        async with u.conn.begin_nested():
            written = await u.conn.execute(
                text("SELECT aggregate_id FROM outbox WHERE id > :after"), {"after": after}
            )
            assert {row[0] for row in written} == {ids[2]}
    assert await outbox_rows(engine, ids, after) == []
    assert await statuses(uow, ids[2:3]) == [PaymentStatus.INITIATED]


async def test_a_mixed_batch_writes_every_event_once(
    uow: Callable[[], PaymentUnitOfWork], engine: AsyncEngine, recorded: Recorded
) -> None:
    """Plain saves (one write with their outbox rows) beside a refund settling its deposit
    and a step with `then` (saves of their own, their events written by the commit)."""
    completed = deposit()
    completed.mark_pending("op-1")
    completed.complete()
    (deposit_id,) = await added(uow, completed)
    async with uow() as u:
        loaded = await u.payments.get(deposit_id, for_update=True)
        assert loaded is not None
        refund = loaded.refund(RefundRequest(f"k-{uuid.uuid4()}", deposit_id, None))
        await u.payments.save(loaded)
        await u.payments.add(refund)
        await u.commit()
    plain = await added(uow, deposit(), deposit())
    followed, other = await added(uow, deposit(), deposit())
    after = await last_outbox_id(engine)

    async def decline_other(store: PaymentStore, _: PaymentStatus) -> None:
        payment = await store.get(other, for_update=True)
        assert payment is not None
        payment.fail("declined")
        await store.save(payment)

    recorded.clear()
    steps = Steps(uow)
    answers = await asyncio.gather(
        steps.step(plain[0], decline),
        steps.step(refund.payment_id, decline),
        steps.step(followed, decline, then=decline_other),
        steps.step(plain[1], decline),
    )
    assert list(answers) == [PaymentStatus.FAILED] * 4
    assert recorded.commits == 1
    touched = [*plain, refund.payment_id, followed, other, deposit_id]
    rows = await outbox_rows(engine, touched, after)
    assert Counter(rows) == Counter(as_rows(recorded.events))
    assert len(set(rows)) == len(rows)
    assert {row[0] for row in rows} >= {*plain, refund.payment_id, followed, other}
    # The plain saves' rows rode in their write; the others' came in the commit's insert.
    outboxed = [s for s in recorded.statements if "INSERT INTO outbox" in s]
    assert len(outboxed) == 2
    assert "UPDATE payments" in outboxed[0]
    assert in_aggregate_order(rows)
    async with uow() as u:
        settled = await u.payments.get(deposit_id)
    assert settled is not None
    assert settled.saga.refund_reserved_minor == 0


async def test_a_batch_with_one_payment_changed_is_still_a_lock_and_one_write(
    uow: Callable[[], PaymentUnitOfWork], engine: AsyncEngine, recorded: Recorded
) -> None:
    ids = await added(uow, deposit(), deposit())
    after = await last_outbox_id(engine)
    recorded.clear()
    steps = Steps(uow)
    answers = await asyncio.gather(
        steps.step(ids[0], decline), steps.step(ids[1], lambda p: Unchanged(p.status))
    )
    assert list(answers) == [PaymentStatus.FAILED, PaymentStatus.INITIATED]
    assert len(recorded.statements) == 2
    assert "INSERT INTO outbox" in recorded.statements[1]
    assert recorded.commits == 1
    rows = await outbox_rows(engine, ids, after)
    assert Counter(rows) == Counter(as_rows(recorded.events))
    assert (ids[0], "payment.failed", 2) in rows

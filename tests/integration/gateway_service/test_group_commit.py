"""Concurrent charges share the gateway's transactions (group commit) against the real
PostgreSQL: every charge is recorded once, a replay answers the operation its key names, and
the whole burst costs far fewer commits than charges.

The burst runs on a database of its own, so pg_stat_database counts only its transactions."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from common import db
from common.config import Settings
from common.errors import IdempotencyConflict
from common.money import Money
from gateway_service.adapters.uow import GatewayUnitOfWork
from gateway_service.bootstrap import DATABASE
from gateway_service.domain.model import Operation, OperationStatus
from gateway_service.service_layer.operations import Operations
from gateway_service.service_layer.providers import ProviderRouter
from tests.gateway_service.conftest import EUR_12_50, PAYMENT_METHOD, FakeProvider, guarded

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

CHARGES = 20
# The pool a gateway replica runs with (common.db.create_engine's default).
POOL_SIZE = 10


@dataclass
class Counts:
    commits: int = 0
    statements: int = 0
    # Each connection the pool opens commits one transaction of its own (the driver's set-up).
    connections: int = 0


@pytest.fixture
def gateway_db(migrated: Settings) -> Iterator[Settings]:
    settings = migrated.model_copy(
        update={"database_prefix": f"{migrated.database_prefix}gc{uuid.uuid4().hex[:6]}_"}
    )
    DATABASE.migrate(settings)
    yield settings
    db.drop_database(DATABASE.url(settings))


@pytest_asyncio.fixture(loop_scope="session")
async def engine(gateway_db: Settings) -> AsyncIterator[AsyncEngine]:
    engine = db.create_engine(DATABASE.url(gateway_db), pool_size=POOL_SIZE)
    yield engine
    await engine.dispose()


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> Counts:
    """Statements sent through psycopg (BEGIN and COMMIT are not: the driver sends those
    itself), counted where every repository and the outbox send theirs."""
    counted = Counts()
    execute, executemany = psycopg.AsyncCursor.execute, psycopg.AsyncCursor.executemany

    async def counting(cursor: Any, query: Any, params: Any = None, **kwargs: Any) -> Any:
        counted.statements += 1
        return await execute(cursor, query, params, **kwargs)

    async def counting_many(cursor: Any, query: Any, params: Any, **kwargs: Any) -> Any:
        params = list(params)
        counted.statements += len(params)
        return await executemany(cursor, query, params, **kwargs)

    monkeypatch.setattr(psycopg.AsyncCursor, "execute", counting)
    monkeypatch.setattr(psycopg.AsyncCursor, "executemany", counting_many)
    return counted


def operations(engine: AsyncEngine, counts: Counts) -> Operations:
    def connected(*_: Any) -> None:
        counts.connections += 1

    event.listen(engine.sync_engine, "connect", connected)

    class CountedUnitOfWork(GatewayUnitOfWork):
        async def commit(self) -> None:
            counts.commits += 1
            await super().commit()

    return Operations(
        uow=lambda: CountedUnitOfWork(engine),
        providers=ProviderRouter([guarded(FakeProvider())]),
        group_commit=True,
    )


async def committed(engine: AsyncEngine) -> int:
    """The database's committed transactions. A backend reports its counts when it exits at
    the latest, so the pool is emptied first; read from another database, so that reading
    is not itself counted."""
    await engine.dispose()
    dsn = db.libpq_dsn(engine.url.set(database="postgres"))
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for _ in range(100):
            cursor = await conn.execute(
                "SELECT numbackends, xact_commit FROM pg_stat_database WHERE datname = %s",
                (engine.url.database,),
            )
            backends, commits = await cursor.fetchone() or (0, 0)
            if backends == 0:
                return int(commits)
            await asyncio.sleep(0.02)
    raise AssertionError("the pool's connections did not close")


def charge(service: Operations, key: str, amount: Money = EUR_12_50) -> Any:
    return service.charge(
        idempotency_key=key, amount=amount, payment_method=PAYMENT_METHOD, reference=key
    )


async def stored(engine: AsyncEngine, keys: list[str]) -> dict[str, list[str]]:
    """Each key's operation with its status history, straight from the tables."""
    async with engine.connect() as conn:
        raw = await db.driver_connection(conn)
        cursor = await raw.execute(
            "SELECT o.idempotency_key, array_agg(h.status ORDER BY h.history_id)"
            " FROM operations o JOIN operation_history h USING (operation_id)"
            " WHERE o.idempotency_key = ANY(%s) GROUP BY 1",
            (keys,),
        )
        return {key: list(history) for key, history in await cursor.fetchall()}


async def test_concurrent_charges_share_transactions_and_are_recorded_once(
    engine: AsyncEngine, counts: Counts
) -> None:
    service = operations(engine, counts)
    keys = [f"pay-{uuid.uuid4()}:charge" for _ in range(CHARGES)]
    before = await committed(engine)
    counts.statements = 0  # reading the statistics is not the charges' cost

    # A few twins race their originals: the same key twice in one burst is one operation.
    first = await asyncio.gather(*(charge(service, key) for key in [*keys, *keys[:3]]))

    commits, statements = counts.commits, counts.statements
    transactions = await committed(engine) - before - counts.connections
    print(
        f"\n{CHARGES} concurrent charges (+3 twins): {commits} commits on the unit of work,"
        f" {transactions} transactions committed (pg_stat_database, less"
        f" {counts.connections} connection set-ups), {statements} statements"
        f" = {transactions / CHARGES:.2f} transactions, {statements / CHARGES:.2f} statements"
        " per charge"
    )
    assert all(op.status is OperationStatus.PENDING for op in first)
    by_key: dict[str, set[str]] = {}
    for op in first:
        by_key.setdefault(op.idempotency_key, set()).add(op.operation_id)
    assert len(by_key) == CHARGES
    assert all(len(ids) == 1 for ids in by_key.values())
    assert await stored(engine, keys) == {key: ["created", "pending"] for key in keys}
    assert commits < CHARGES
    assert transactions < CHARGES

    # Replays, with one key reused for another amount: only that one is refused.
    again = await asyncio.gather(
        *(charge(service, key) for key in keys),
        charge(service, keys[0], Money(999, "EUR")),
        return_exceptions=True,
    )

    assert isinstance(again[-1], IdempotencyConflict)
    replayed = again[:-1]
    assert all(isinstance(op, Operation) for op in replayed)
    assert [(op.operation_id, op.status) for op in replayed] == [  # type: ignore[union-attr]
        (next(iter(by_key[key])), OperationStatus.PENDING) for key in keys
    ]
    assert await stored(engine, keys) == {key: ["created", "pending"] for key in keys}

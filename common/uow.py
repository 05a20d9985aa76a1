"""The unit of work: one database transaction per use case, which also writes the outbox.

Aggregates collect the domain events they cause; repositories register (`track`) every
aggregate they hand out or add, as cosmicpython's `seen`; at commit the unit of work turns
every collected event into an envelope and writes it to the outbox in the same transaction as
the state change (invariant 7). Service code never tracks by hand, so it cannot forget to.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import AsyncIterator, Callable, Sequence
from types import TracebackType
from typing import Any, Protocol, Self

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.util import greenlet_spawn

from common import tracing
from common.db import RawConnection, begin_pooled, database_boundary, is_database_down
from common.errors import DependencyUnavailable
from common.events import OutgoingEvent
from common.outbox import outbox_committed, write_outbox

log = structlog.get_logger(__name__)


class EventSource(Protocol):
    def pull_events(self) -> list[Any]: ...


class UnitOfWork(Protocol):
    """What a service layer needs of a unit of work; each service adds its repositories."""

    async def __aenter__(self) -> Self: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
    def track(self, aggregate: Any) -> None: ...
    async def commit(self) -> None: ...


# None: the event is not published. Every state change is durable in its own table; only
# the events someone subscribes to are queued in the outbox (design: "an event is published
# only if someone acts on it"), as the gateway already leaves `<kind>.pending` unannounced.
EventMapper = Callable[[Any], OutgoingEvent | None]


class SqlUnitOfWork:
    conn: AsyncConnection
    # The same transaction's driver connection, for plain-SQL hot paths.
    raw: RawConnection

    def __init__(self, engine: AsyncEngine, to_outgoing: EventMapper) -> None:
        self._engine = engine
        self._to_outgoing = to_outgoing
        self._tracked: list[EventSource] = []
        # By identity, beside the list that keeps them alive (and their ids unique): a batch
        # of 32 steps tracked each against the whole list before.
        self._tracked_ids: set[int] = set()
        self._extra: list[OutgoingEvent] = []
        # The events whose outbox rows a statement of the unit wrote itself (`take_outgoing`):
        # reported at commit, not written again.
        self._outboxed: list[Any] = []
        self._wrote_outbox = False
        database = engine.url.database or ""
        self._span_name = f"transaction {database}"
        self._span_attributes = {"db.system": "postgresql", "db.name": database}
        self._span: trace.Span | None = None
        self._span_token: contextvars.Token[otel_context.Context] | None = None

    async def __aenter__(self) -> Self:
        # One span per transaction (not per statement): it is what a trace needs to show
        # where a flow waited for the database, and it costs one span per use case.
        self._span = tracing.tracer().start_span(
            self._span_name, kind=trace.SpanKind.CLIENT, attributes=self._span_attributes
        )
        self._span_token = otel_context.attach(trace.set_span_in_context(self._span))
        try:
            async with database_boundary("connect"):
                sync_conn, self.raw = await greenlet_spawn(begin_pooled, self._engine.sync_engine)
                self.conn = AsyncConnection(self._engine, sync_conn)
        except BaseException as exc:
            self._end_span(exc)
            raise
        self._tracked = []
        self._tracked_ids = set()
        self._extra = []
        self._outboxed = []
        self._wrote_outbox = False
        self._open()
        return self

    def _open(self) -> None:
        """Subclasses build their repositories on `self.conn` here."""

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._close()
        finally:
            self._end_span(exc)
        # The adapter boundary: an unreachable database anywhere inside the unit of work (a
        # repository's statement, the commit) leaves it as DependencyUnavailable, so nothing
        # above ever sees SQLAlchemy or psycopg.
        if exc is not None and is_database_down(exc):
            raise DependencyUnavailable("database unavailable") from exc

    async def _close(self) -> None:
        try:
            async with database_boundary("rollback"):
                try:
                    if self.conn.in_transaction():
                        await self.conn.rollback()
                finally:
                    await self.conn.close()
        except DependencyUnavailable:
            pass  # the server is gone: so is the transaction, and the pool drops the connection

    def _end_span(self, exc: BaseException | None) -> None:
        span, self._span = self._span, None
        if span is None:
            return
        if self._span_token is not None:
            otel_context.detach(self._span_token)
        if exc is not None:
            tracing.record_failure(span, exc)
        span.end()

    def track(self, aggregate: EventSource) -> None:
        if id(aggregate) not in self._tracked_ids:
            self._tracked_ids.add(id(aggregate))
            self._tracked.append(aggregate)

    def emit(self, event: OutgoingEvent) -> None:
        """An event that belongs to no aggregate of this service."""
        self._extra.append(event)

    def take_outgoing(self, aggregates: Sequence[EventSource]) -> list[OutgoingEvent]:
        """Pulls the events of `aggregates` now, as outbox rows for a statement that writes
        them itself (`common.outbox.outbox_cte`) beside its writes of those aggregates: one
        statement fewer than `commit`'s outbox insert. `commit` then reports them (`committed`)
        and does not write them again. Should that statement fail, the unit must not commit:
        the events are no longer on the aggregates."""
        harvested = [e for agg in aggregates for e in agg.pull_events()]
        outgoing = self._mapped(harvested)
        self._outboxed += harvested
        self._wrote_outbox = self._wrote_outbox or bool(outgoing)
        return outgoing

    async def commit(self) -> None:
        harvested = [e for agg in self._tracked for e in agg.pull_events()]
        outgoing = [*self._mapped(harvested), *self._extra]
        await write_outbox(self.raw, outgoing)
        await self.conn.commit()
        events = [*self._outboxed, *harvested]
        wrote_outbox = self._wrote_outbox or bool(outgoing)
        tracked, self._tracked, self._extra = self._tracked, [], []
        self._tracked_ids = set()
        self._outboxed, self._wrote_outbox = [], False
        self.committed(events, tracked, wrote_outbox=wrote_outbox)

    def _mapped(self, events: list[Any]) -> list[OutgoingEvent]:
        """The events someone subscribes to, as outbox rows (`EventMapper`)."""
        return [o for o in map(self._to_outgoing, events) if o is not None]

    def committed(
        self, events: list[Any], aggregates: list[EventSource], *, wrote_outbox: bool
    ) -> None:
        """After a commit: wakes this process's relay for the outbox rows it wrote and hands
        the durable change's domain events to the observers (`_committed`)."""
        if wrote_outbox:
            outbox_committed(self._engine)
        if events:
            try:
                self._committed(events, aggregates)
            except Exception:
                # The change is durable: an observer's bug must not turn it into a failure
                # that the caller would retry.
                log.exception("uow.observer_failed")

    @contextlib.asynccontextmanager
    async def autocommit(self) -> AsyncIterator[RawConnection]:
        """The unit's connection in autocommit: each statement is a transaction of its own,
        with no BEGIN and no COMMIT. For a unit whose writes are one statement, the outbox
        rows included (`common.outbox.outbox_cte`): one round trip where a transaction takes
        four (BEGIN, the write, the outbox insert, COMMIT). Only before the unit has sent
        anything; the caller reports what it wrote (`committed`), as `commit` does."""
        raw = self.raw
        await raw.set_autocommit(True)
        try:
            yield raw
        finally:
            try:
                await raw.set_autocommit(False)
            except Exception:
                # Not back to the pool in autocommit: there every later unit's statements
                # would commit one by one. A connection that cannot say it is idle is dropped.
                await self.conn.invalidate()

    def _committed(self, events: list[Any], aggregates: list[EventSource]) -> None:
        """Subclasses observe the domain events of a change once it is durable (metrics
        count here, after the commit, so a rolled-back change is never counted)."""

"""SqlUnitOfWork's outbox bookkeeping, without a database: the events a statement took for its
own outbox rows (`take_outgoing`) are reported at commit and never written again; the rest
are written by the commit as before."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from common import uow as uow_module
from common.events import OutgoingEvent
from common.uow import EventSource, SqlUnitOfWork
from paysuite.events.v1 import events_pb2


class Aggregate:
    def __init__(self, *events: str) -> None:
        self.events = list(events)

    def pull_events(self) -> list[Any]:
        events, self.events = self.events, []
        return events


class Conn:
    commits = 0

    async def commit(self) -> None:
        self.commits += 1


def to_outgoing(event: Any) -> OutgoingEvent | None:
    if event == "unpublished":
        return None
    return OutgoingEvent("stream", events_pb2.EventEnvelope(event_type=str(event)))


class Observed(SqlUnitOfWork):
    def __init__(self) -> None:
        super().__init__(create_async_engine("postgresql+psycopg://u@localhost/db"), to_outgoing)
        self.conn = Conn()  # type: ignore[assignment]
        self.raw = None  # type: ignore[assignment]  # only handed to the stubbed outbox insert
        self.reported: list[list[Any]] = []

    def _committed(self, events: list[Any], aggregates: list[EventSource]) -> None:
        self.reported.append(events)


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """What each commit's outbox insert was given; the relay's wake-ups as the string "woken"."""
    calls: list[list[str]] = []

    async def write_outbox(raw: Any, events: Sequence[OutgoingEvent]) -> None:
        calls.append([e.envelope.event_type for e in events])

    monkeypatch.setattr(uow_module, "write_outbox", write_outbox)
    monkeypatch.setattr(uow_module, "outbox_committed", lambda engine: calls.append(["woken"]))
    return calls


async def test_events_taken_for_a_statement_are_reported_at_commit_not_written_again(
    written: list[list[str]],
) -> None:
    unit = Observed()
    saved, other = Aggregate("a1", "a2"), Aggregate("b1", "unpublished")
    unit.track(saved)
    unit.track(other)
    taken = unit.take_outgoing([saved])
    assert [o.envelope.event_type for o in taken] == ["a1", "a2"]
    await unit.commit()
    assert written == [["b1"], ["woken"]]
    assert unit.reported == [["a1", "a2", "b1", "unpublished"]]


async def test_a_unit_whose_only_outbox_rows_a_statement_wrote_still_wakes_the_relay(
    written: list[list[str]],
) -> None:
    unit = Observed()
    saved = Aggregate("a1")
    unit.track(saved)
    unit.take_outgoing([saved])
    await unit.commit()
    assert written == [[], ["woken"]]
    assert unit.reported == [["a1"]]


async def test_taken_events_that_publish_nothing_wake_no_relay_and_are_forgotten_at_commit(
    written: list[list[str]],
) -> None:
    unit = Observed()
    assert unit.take_outgoing([Aggregate("unpublished")]) == []
    await unit.commit()
    await unit.commit()
    assert written == [[], []]
    assert unit.reported == [["unpublished"]]

"""In-memory fakes of the gateway's ports (unit of work, provider) and fixtures built on them.

The fake unit of work behaves like the SQL one where the service relies on it: changes are
staged and only become visible at commit, unique keys raise ConcurrentUpdate, and commit
harvests the tracked aggregates' events (the fake's "outbox").
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import pytest

from common.errors import ConcurrentUpdate
from common.money import Money
from gateway_service.adapters.metrics import ProviderMetrics
from gateway_service.domain import events
from gateway_service.domain.breaker import BreakerOptions, CircuitBreaker
from gateway_service.domain.model import (
    HistoryEntry,
    Operation,
    OperationKind,
    OperationStatus,
    ProviderEvent,
    ProviderEventStatus,
)
from gateway_service.domain.provider import (
    Instruction,
    InstructionKind,
    ProviderAcceptance,
    ReportedStatus,
    StatusReport,
)
from gateway_service.service_layer.gateway import GatewayService
from gateway_service.service_layer.providers import GuardedProvider, ProviderRouter, RetryPolicy

EUR_12_50 = Money(1250, "EUR")
PAYMENT_METHOD = "pm_card_visa"
PRIMARY = "sim-primary"
SECONDARY = "sim-secondary"


def _detached(operation: Operation) -> Operation:
    """A copy sharing nothing with the original, as a row read back from a database."""
    return dataclasses.replace(operation, _events=[])


@dataclasses.dataclass
class StoredProviderEvent:
    event: ProviderEvent
    operation_id: str | None
    status: ProviderEventStatus


@dataclasses.dataclass
class FakeDatabase:
    operations: dict[str, Operation] = dataclasses.field(default_factory=dict)
    history: dict[str, list[HistoryEntry]] = dataclasses.field(default_factory=dict)
    provider_events: dict[tuple[str, str], StoredProviderEvent] = dataclasses.field(
        default_factory=dict
    )
    # Every event committed, in order: what the outbox would hold.
    published: list[events.GatewayEvent] = dataclasses.field(default_factory=list)
    # Committed by "another request" just before our next insert, to stage an insert race.
    racing_insert: Operation | None = None
    commits: int = 0

    def by_key(self, idempotency_key: str) -> Operation | None:
        return next(
            (op for op in self.operations.values() if op.idempotency_key == idempotency_key),
            None,
        )


class FakeOperations:
    """Registers what it hands out or adds with the unit of work, as the SQL repository."""

    def __init__(
        self, db: FakeDatabase, staged: dict[str, Operation], track: Callable[[Any], None]
    ) -> None:
        self._db = db
        self._staged = staged
        self._track = track
        # Written by the unit of work's commit: a rolled-back save leaves no history entry.
        self.staged_history: list[tuple[str, HistoryEntry]] = []

    def _seen(self, found: Operation) -> Operation:
        operation = _detached(found)
        self._track(operation)
        return operation

    async def get(self, operation_id: str, *, for_update: bool = False) -> Operation | None:
        found = self._staged.get(operation_id)
        return self._seen(found) if found else None

    async def get_many(
        self, operation_ids: Sequence[str], *, for_update: bool = False
    ) -> dict[str, Operation]:
        return {
            operation_id: self._seen(self._staged[operation_id])
            for operation_id in sorted(set(operation_ids))
            if operation_id in self._staged
        }

    async def find_by_idempotency_keys(self, keys: Sequence[str]) -> dict[str, Operation]:
        wanted = set(keys)
        return {
            op.idempotency_key: self._seen(op)
            for op in self._staged.values()
            if op.idempotency_key in wanted
        }

    async def find_by_idempotency_key(self, idempotency_key: str) -> Operation | None:
        found = next(
            (op for op in self._staged.values() if op.idempotency_key == idempotency_key), None
        )
        return self._seen(found) if found else None

    async def find_by_provider_reference(
        self, provider: str, provider_reference: str, *, for_update: bool = False
    ) -> Operation | None:
        found = next(
            (
                op
                for op in self._staged.values()
                if (op.provider, op.provider_reference) == (provider, provider_reference)
            ),
            None,
        )
        return self._seen(found) if found else None

    async def lock_for_events(
        self, references: Sequence[tuple[str, str]], operation_ids: Sequence[str]
    ) -> list[Operation]:
        found = [
            op
            for op in self._staged.values()
            if (op.provider, op.provider_reference) in set(references)
            or op.operation_id in set(operation_ids)
        ]
        return [self._seen(op) for op in sorted(found, key=lambda op: op.operation_id)]

    async def refunded_minor(self, charge_operation_id: str) -> int:
        return sum(
            op.amount.amount_minor
            for op in self._staged.values()
            if op.parent_operation_id == charge_operation_id
            and op.kind is OperationKind.REFUND
            and op.status is not OperationStatus.FAILED
        )

    async def history(self, operation_id: str) -> list[HistoryEntry]:
        return list(self._db.history.get(operation_id, []))

    def _append_history(self, operation: Operation) -> None:
        entry = HistoryEntry(
            status=operation.status,
            provider=operation.provider,
            provider_reference=operation.provider_reference or "",
            failure_reason=operation.failure_reason or "",
            outcome_unknown=operation.outcome_unknown,
            recorded_at=None,
        )
        self.staged_history.append((operation.operation_id, entry))

    async def add_new(self, operation: Operation) -> bool:
        try:
            await self.add(operation)
        except ConcurrentUpdate:
            return False
        return True

    async def add_many(self, operations: Sequence[Operation]) -> set[str]:
        """As the SQL one: a taken key (or one twice in the batch) is skipped, not an error."""
        ordered = sorted(operations, key=lambda op: op.idempotency_key)
        return {op.operation_id for op in ordered if await self.add_new(op)}

    async def add(self, operation: Operation) -> None:
        self._track(operation)
        if self._db.racing_insert is not None:
            winner, self._db.racing_insert = self._db.racing_insert, None
            self._db.operations[winner.operation_id] = _detached(winner)
        taken = {
            op.idempotency_key for op in [*self._db.operations.values(), *self._staged.values()]
        }
        if operation.idempotency_key in taken:
            raise ConcurrentUpdate("a concurrent request changed the same data")
        operation.updated_at = operation.created_at = datetime.now(UTC)
        self._staged[operation.operation_id] = _detached(operation)
        self._append_history(operation)

    async def save_many(self, operations: Sequence[Operation]) -> None:
        for operation in operations:
            await self.save(operation)

    async def save(self, operation: Operation) -> None:
        operation.updated_at = datetime.now(UTC)
        self._staged[operation.operation_id] = _detached(operation)
        self._append_history(operation)


class FakeProviderEvents:
    def __init__(
        self,
        staged: dict[tuple[str, str], StoredProviderEvent],
        save_many: Callable[[Sequence[Operation]], Awaitable[None]],
    ) -> None:
        self._staged = staged
        self._save_many = save_many

    async def recorded(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str | None]:
        return {key: self._staged[key].operation_id for key in keys if key in self._staged}

    async def record(
        self,
        records: Sequence[tuple[ProviderEvent, str | None, ProviderEventStatus]],
        *,
        saving: Sequence[Operation] = (),
    ) -> set[tuple[str, str]]:
        await self._save_many(saving)
        inserted = set()
        for event, operation_id, status in records:
            key = (event.provider, event.provider_event_id)
            if key not in self._staged:
                self._staged[key] = StoredProviderEvent(event, operation_id, status)
                inserted.add(key)
        return inserted


class FakeUnitOfWork:
    operations: FakeOperations
    provider_events: FakeProviderEvents

    def __init__(self, db: FakeDatabase) -> None:
        self._db = db
        self._tracked: list[Any] = []

    async def __aenter__(self) -> Self:
        self._ops = dict(self._db.operations)
        self._events = {k: dataclasses.replace(v) for k, v in self._db.provider_events.items()}
        self.operations = FakeOperations(self._db, self._ops, self.track)
        self.provider_events = FakeProviderEvents(self._events, self.operations.save_many)
        self._tracked = []
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._tracked = []

    def track(self, aggregate: Any) -> None:
        if not any(aggregate is seen for seen in self._tracked):
            self._tracked.append(aggregate)

    def publish(self, *facts: object) -> None:
        self.track(events.Facts(*facts))

    async def record_new(
        self, operations: Sequence[Operation]
    ) -> tuple[set[str], dict[str, Operation]]:
        """Committed at once, as the SQL one's autocommit statement: the inserted operations
        (and only they) reach the database, beside what others committed meanwhile. The
        holders of taken keys are read from this unit's snapshot, as the other reads are."""
        inserted = await self.operations.add_many(operations)
        self._db.commits += 1
        for operation_id in inserted:
            self._db.operations[operation_id] = self._ops[operation_id]
        staged = self.operations.staged_history
        for operation_id, entry in staged:
            if operation_id in inserted:
                self._db.history.setdefault(operation_id, []).append(entry)
        self.operations.staged_history = [e for e in staged if e[0] not in inserted]
        taken = [op.idempotency_key for op in operations if op.operation_id not in inserted]
        return inserted, await self.operations.find_by_idempotency_keys(taken) if taken else {}

    async def save_unchanged(self, operations: Sequence[tuple[Operation, int]]) -> set[str]:
        """Committed at once, as the SQL one's autocommit statement: each operation whose
        committed row is still at the version given, beside what others committed meanwhile."""
        self._db.commits += 1
        saved = set()
        for operation, previous in operations:
            stored = self._db.operations.get(operation.operation_id)
            if stored is None or stored.version != previous:
                continue
            operation.updated_at = datetime.now(UTC)
            self._db.operations[operation.operation_id] = _detached(operation)
            self.operations._append_history(operation)
            entry = self.operations.staged_history.pop()
            self._db.history.setdefault(operation.operation_id, []).append(entry[1])
            saved.add(operation.operation_id)
        return saved

    async def commit(self) -> None:
        self._db.commits += 1
        for aggregate in self._tracked:
            self._db.published.extend(aggregate.pull_events())
        self._db.operations = dict(self._ops)
        for operation_id, entry in self.operations.staged_history:
            self._db.history.setdefault(operation_id, []).append(entry)
        self.operations.staged_history = []
        self._db.provider_events = dict(self._events)
        self._tracked = []


Answer = ProviderAcceptance | Exception


class FakeProvider:
    """Deduplicates on the idempotency key like a real provider; scripted answers first.

    `calls` records every request that reached it; `moved` the idempotency keys of requests
    it acted on (answered or not), which is what "money moved here" means in the tests.
    """

    def __init__(self, name: str = PRIMARY) -> None:
        self._name = name
        self.answers: list[Answer] = []
        self.calls: list[Instruction] = []
        self.references: dict[str, str] = {}
        self.statuses: dict[str, StatusReport] = {}
        self.status_answers: list[StatusReport | Exception] = []
        # Runs while the "provider" holds the request, e.g. to deliver a webhook meanwhile.
        self.during_call: Callable[[Instruction], Awaitable[None]] | None = None

    @property
    def name(self) -> str:
        return self._name

    async def charge(self, instruction: Instruction, *, timeout_s: float) -> ProviderAcceptance:
        return await self._submit(instruction)

    async def payout(self, instruction: Instruction, *, timeout_s: float) -> ProviderAcceptance:
        return await self._submit(instruction)

    async def refund(self, instruction: Instruction, *, timeout_s: float) -> ProviderAcceptance:
        return await self._submit(instruction)

    async def get_status(
        self,
        kind: InstructionKind,
        *,
        idempotency_key: str,
        provider_reference: str,
        timeout_s: float,
    ) -> StatusReport:
        if self.status_answers:
            answer = self.status_answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        return self.statuses.get(idempotency_key, StatusReport(ReportedStatus.NOT_FOUND))

    async def _submit(self, instruction: Instruction) -> ProviderAcceptance:
        self.calls.append(instruction)
        reference = self.references.setdefault(
            instruction.idempotency_key, f"ch_{uuid.uuid4().hex[:12]}"
        )
        if self.during_call is not None:
            await self.during_call(instruction)
        if self.answers:
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        self.statuses[instruction.idempotency_key] = StatusReport(
            ReportedStatus.PENDING, reference, "", instruction.amount
        )
        return ProviderAcceptance(provider_reference=reference)


def charge_instruction() -> Instruction:
    """A charge as the gateway sends it to a provider, with a key of its own."""
    return Instruction(
        kind=InstructionKind.CHARGE,
        idempotency_key=f"pay-{uuid.uuid4()}:charge",
        amount=Money(1250, "EUR"),
        instrument="pm_card_visa",
        reference=str(uuid.uuid4()),
    )


def guarded(provider: FakeProvider, **options: Any) -> GuardedProvider:
    return GuardedProvider(
        provider,
        CircuitBreaker(provider.name, BreakerOptions(**options)),
        timeout_s=1.0,
        metrics=ProviderMetrics(provider.name),
        retry=RetryPolicy(attempts=2, initial_backoff_s=0.001, max_backoff_s=0.002),
    )


@pytest.fixture
def fake_db() -> FakeDatabase:
    return FakeDatabase()


@pytest.fixture
def fake_provider() -> FakeProvider:
    return FakeProvider(PRIMARY)


@pytest.fixture
def secondary() -> FakeProvider:
    return FakeProvider(SECONDARY)


@pytest.fixture
def router(fake_provider: FakeProvider, secondary: FakeProvider) -> ProviderRouter:
    return ProviderRouter([guarded(fake_provider), guarded(secondary)])


# Every service test runs on both paths: each request in its own unit of work, and grouped
# with whatever arrives with it (bootstrap's choice), where a request alone is a batch of one.
@pytest.fixture(params=[False, True], ids=["alone", "grouped"])
def service(
    fake_db: FakeDatabase, router: ProviderRouter, request: pytest.FixtureRequest
) -> GatewayService:
    return GatewayService(
        uow=lambda: FakeUnitOfWork(fake_db),
        providers=router,
        sync_not_found_grace_s=0,
        group_commit=request.param,
    )


async def charge(service: GatewayService, **overrides: Any) -> Operation:
    request: dict[str, Any] = {
        "idempotency_key": "pay-1:charge",
        "amount": EUR_12_50,
        "payment_method": PAYMENT_METHOD,
        "reference": "pay-1",
        **overrides,
    }
    return await service.operations.charge(**request)


def operation_facts(fake_db: FakeDatabase) -> list[events.OperationFact]:
    return [e for e in fake_db.published if isinstance(e, events.OperationFact)]


def statuses(fake_db: FakeDatabase) -> list[str]:
    return [e.status for e in operation_facts(fake_db)]


def provider_event_body(charge_id: str, reference: str, event_type: str) -> bytes:
    """A body shaped like the simulator's webhook."""
    status = event_type.removeprefix("charge.")
    return json.dumps(
        {
            "id": "evt_x",
            "type": event_type,
            "created": 1_700_000_000,
            "data": {"charge_id": charge_id, "reference": reference, "status": status},
        }
    ).encode()

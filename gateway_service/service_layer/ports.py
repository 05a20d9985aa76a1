"""What the gateway needs from the outside, as small Protocols (fakes in unit tests): its
unit of work and stores, the providers it calls, and somewhere to count those calls."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from common.uow import UnitOfWork as BaseUnitOfWork
from gateway_service.domain.model import (
    HistoryEntry,
    Operation,
    ProviderEvent,
    ProviderEventStatus,
)
from gateway_service.domain.provider import (
    Instruction,
    InstructionKind,
    ProviderAcceptance,
    StatusReport,
)


class OperationStore(Protocol):
    """Operations by id, idempotency key or provider reference. `for_update` locks the row
    until the unit of work ends; every change to an existing operation is made under it.
    Every operation it hands out or adds is registered with the unit of work, whose commit
    harvests its events."""

    async def get(self, operation_id: str, *, for_update: bool = False) -> Operation | None: ...
    async def get_many(
        self, operation_ids: Sequence[str], *, for_update: bool = False
    ) -> dict[str, Operation]:
        """The operations found among these ids, by id; `for_update` locks them in id order
        (as `lock_for_events`), so overlapping batches cannot deadlock."""
        ...

    async def find_by_idempotency_key(self, idempotency_key: str) -> Operation | None: ...
    async def find_by_idempotency_keys(self, keys: Sequence[str]) -> dict[str, Operation]:
        """The operations found among these keys, by key, in one read."""
        ...

    async def find_by_provider_reference(
        self, provider: str, provider_reference: str, *, for_update: bool = False
    ) -> Operation | None: ...
    async def lock_for_events(
        self, references: Sequence[tuple[str, str]], operation_ids: Sequence[str]
    ) -> list[Operation]:
        """The operations named by (provider, provider_reference) or id, locked in id order."""
        ...

    async def refunded_minor(self, charge_operation_id: str) -> int:
        """The amount of the charge's refunds that have not failed."""
        ...

    async def history(self, operation_id: str) -> list[HistoryEntry]: ...
    async def add(self, operation: Operation) -> None: ...
    async def add_new(self, operation: Operation) -> bool:
        """Adds the operation unless its idempotency key is taken (then False, no change)."""
        ...

    async def add_many(self, operations: Sequence[Operation]) -> set[str]:
        """Adds, in one write, those whose idempotency key is free (a key twice in the batch:
        the first); returns the ids added. A key another transaction holds waits for it."""
        ...

    async def save(self, operation: Operation) -> None: ...
    async def save_many(self, operations: Sequence[Operation]) -> None:
        """`save` for many distinct operations in one write; ConcurrentUpdate if one is gone."""
        ...


EventKey = tuple[str, str]  # (provider, provider_event_id)
EventRecord = tuple[ProviderEvent, str | None, ProviderEventStatus]


class ProviderEventStore(Protocol):
    async def recorded(self, keys: Sequence[EventKey]) -> dict[EventKey, str | None]:
        """Which of these events are already recorded, with the operation each matched."""
        ...

    async def record(
        self, records: Sequence[EventRecord], *, saving: Sequence[Operation] = ()
    ) -> set[EventKey]:
        """Records events with what became of them; returns the keys it inserted. A key that
        a concurrent transaction inserted waits for that one, and is then left out."""
        ...


class UnitOfWork(BaseUnitOfWork, Protocol):
    @property
    def operations(self) -> OperationStore: ...
    @property
    def provider_events(self) -> ProviderEventStore: ...

    def publish(self, *facts: object) -> None:
        """Facts that belong to no operation (a webhook recorded, a breaker moved), written
        to the outbox at commit with the rest of the change."""
        ...

    async def record_new(
        self, operations: Sequence[Operation]
    ) -> tuple[set[str], dict[str, Operation]]:
        """`operations.add_many` committed at once, for a unit that does nothing before it: the
        operations whose key was free are durable when it returns (a new operation emits
        nothing, so nothing else is written with them). Returns their ids, and the operations
        that hold the other keys (`find_by_idempotency_keys`), read after."""
        ...

    async def save_unchanged(self, operations: Sequence[tuple[Operation, int]]) -> set[str]:
        """Each (operation, the version it was read at) saved, committed at once, if its row
        is still at that version, for a unit that does nothing before it; returns the ids
        saved. For changes that emit no event: nothing else is written with them."""
        ...


UnitOfWorkFactory = Callable[[], UnitOfWork]


class Provider(Protocol):
    """A payment provider. Calls raise the gateway_service.domain.provider error family.

    Verifying and parsing the provider's webhooks is the other half of this port; it lives in
    the webhook adapter, the one process that holds the secrets.
    """

    @property
    def name(self) -> str: ...

    async def charge(self, instruction: Instruction, *, timeout_s: float) -> ProviderAcceptance: ...
    async def payout(self, instruction: Instruction, *, timeout_s: float) -> ProviderAcceptance: ...
    async def refund(self, instruction: Instruction, *, timeout_s: float) -> ProviderAcceptance: ...
    async def get_status(
        self,
        kind: InstructionKind,
        *,
        idempotency_key: str,
        provider_reference: str,
        timeout_s: float,
    ) -> StatusReport: ...


class CallMetrics(Protocol):
    """What one provider's calls are counted by (gateway_service.adapters.metrics). The
    operation is an instruction kind or "status"; the outcome one of a fixed list."""

    def attempted(self, operation: str, outcome: str, seconds: float) -> None:
        """An attempt that reached the provider (or its transport), and how long it took."""
        ...

    def refused(self, operation: str) -> None:
        """An attempt the breaker refused: never sent."""
        ...

    def retried(self, operation: str) -> None:
        """An attempt beyond the first, with the same idempotency key."""
        ...

"""The gateway's unit of work. An unreachable database anywhere inside it leaves as
DependencyUnavailable: common.uow.SqlUnitOfWork is that boundary for every service."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from common.uow import SqlUnitOfWork
from gateway_service.adapters.event_mapping import to_outgoing
from gateway_service.adapters.repository import OperationRepository, ProviderEventRepository
from gateway_service.domain.events import Facts
from gateway_service.domain.model import Operation


class GatewayUnitOfWork(SqlUnitOfWork):
    operations: OperationRepository
    provider_events: ProviderEventRepository

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine, to_outgoing)

    def _open(self) -> None:
        self.operations = OperationRepository(self.conn, self.raw, track=self.track)
        self.provider_events = ProviderEventRepository(
            self.conn, self.raw, take_outgoing=self.take_outgoing
        )

    def publish(self, *facts: object) -> None:
        self.track(Facts(*facts))

    async def record_new(
        self, operations: Sequence[Operation]
    ) -> tuple[set[str], dict[str, Operation]]:
        """Autocommit statements, each a transaction of its own: recording the operations
        before the provider is asked was BEGIN, the insert and COMMIT, three round trips on the
        saga's path where one will do (`Operation.open` emits nothing: no outbox row). The
        holders of keys already taken (replays) are read the same way."""
        async with self.autocommit():
            inserted = await self.operations.add_many(operations)
            taken = [op.idempotency_key for op in operations if op.operation_id not in inserted]
            existing = await self.operations.find_by_idempotency_keys(taken) if taken else {}
        return inserted, existing

    async def save_unchanged(self, operations: Sequence[tuple[Operation, int]]) -> set[str]:
        """`operations.save_unchanged` as one autocommit statement: recording a provider's
        answer to the request that holds the operation was BEGIN, the locking read, the
        save and COMMIT. Only for changes that emit nothing (no outbox row to write)."""
        async with self.autocommit():
            return await self.operations.save_unchanged(operations)

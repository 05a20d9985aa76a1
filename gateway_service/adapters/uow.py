"""The gateway's unit of work. An unreachable database anywhere inside it leaves as
DependencyUnavailable: common.uow.SqlUnitOfWork is that boundary for every service."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from common.uow import SqlUnitOfWork
from gateway_service.adapters.event_mapping import to_outgoing
from gateway_service.adapters.repository import OperationRepository, ProviderEventRepository
from gateway_service.domain.events import Facts


class GatewayUnitOfWork(SqlUnitOfWork):
    operations: OperationRepository
    provider_events: ProviderEventRepository

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine, to_outgoing)

    def _open(self) -> None:
        self.operations = OperationRepository(self.conn, self.raw, track=self.track)
        self.provider_events = ProviderEventRepository(self.conn, self.raw)

    def publish(self, *facts: object) -> None:
        self.track(Facts(*facts))

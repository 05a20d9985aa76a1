from __future__ import annotations

from types import TracebackType

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from common.errors import DependencyUnavailable
from common.uow import SqlUnitOfWork
from gateway_service.adapters.event_mapping import to_outgoing
from gateway_service.adapters.repository import OperationRepository, ProviderEventRepository

# The database failing, as opposed to refusing what we asked (IntegrityError is a conflict,
# translated where it is raised). Translated once, here, so the service layer and the gRPC
# error table only ever see DependencyUnavailable (design.md §2).
INFRASTRUCTURE_ERRORS = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    OSError,
)


def _is_infrastructure(exc: BaseException | None) -> bool:
    if isinstance(exc, INFRASTRUCTURE_ERRORS):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated


class GatewayUnitOfWork(SqlUnitOfWork):
    operations: OperationRepository
    provider_events: ProviderEventRepository

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine, to_outgoing)

    async def __aenter__(self) -> GatewayUnitOfWork:
        try:
            await super().__aenter__()
        except Exception as exc:
            if _is_infrastructure(exc):
                raise DependencyUnavailable("the gateway database is unavailable") from exc
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await super().__aexit__(exc_type, exc, tb)
        except Exception as cleanup_error:
            if not _is_infrastructure(cleanup_error):
                raise
            if exc is None:
                raise DependencyUnavailable("the gateway database is unavailable") from None
        if _is_infrastructure(exc):
            raise DependencyUnavailable("the gateway database is unavailable") from exc

    def _open(self) -> None:
        self.operations = OperationRepository(self.conn)
        self.provider_events = ProviderEventRepository(self.conn)

from __future__ import annotations

from types import TracebackType
from typing import Self

from sqlalchemy.ext.asyncio import AsyncEngine

from common.uow import EventMapper, SqlUnitOfWork
from wallet_service.adapters.boundary import translated
from wallet_service.adapters.event_mapping import to_outgoing
from wallet_service.adapters.repository import AccountCache, WalletRepository

# Loading an account replays the events after its latest snapshot: every 10 keeps that to a
# few events (a batch of 32 postings on distinct accounts loads 32 histories), at one small
# snapshot row per 10 events. Measured: every 50 cost a third of the distinct-account rate.
DEFAULT_SNAPSHOT_EVERY = 10


class WalletUnitOfWork(SqlUnitOfWork):
    """One wallet transaction. The repository tracks every account it loads or adds, so their
    events reach the outbox at commit without any call site remembering to ask."""

    accounts: WalletRepository

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        known_system: set[str] | None = None,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        publish: EventMapper = to_outgoing,
        cache: AccountCache | None = None,
    ) -> None:
        """`cache`: shared by the process's units of work (None: every load replays)."""
        super().__init__(engine, publish)
        self._known_system = known_system if known_system is not None else set()
        self._snapshot_every = snapshot_every
        self._cache = cache

    def _open(self) -> None:
        self.accounts = WalletRepository(
            self.conn,
            self.raw,
            track=self.track,
            known_system=self._known_system,
            snapshot_every=self._snapshot_every,
            cache=self._cache,
        )

    async def __aenter__(self) -> Self:
        async with translated():
            return await super().__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        async with translated():
            await super().__aexit__(exc_type, exc, tb)

    async def commit(self) -> None:
        await self.accounts.flush()
        async with translated():
            await super().commit()
        self._known_system.update(self.accounts.created_system)
        self.accounts.committed()

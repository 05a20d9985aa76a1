from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from common.uow import SqlUnitOfWork
from wallet_service.adapters.event_mapping import to_outgoing
from wallet_service.adapters.repository import WalletRepository


class WalletUnitOfWork(SqlUnitOfWork):
    accounts: WalletRepository

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine, to_outgoing)

    def _open(self) -> None:
        self.accounts = WalletRepository(self.conn)

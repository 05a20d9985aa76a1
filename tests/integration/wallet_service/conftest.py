"""Wallet test fixtures: the service layer and an engine on the suite's wallet database, and a
throw-away wallet database for tests that tamper with the books."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from common import db
from common.config import Settings
from tests.conftest import Suite
from wallet_service.adapters.uow import WalletUnitOfWork
from wallet_service.bootstrap import DATABASE
from wallet_service.service_layer.services import WalletService


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def wallet_engine(suite: Suite) -> AsyncIterator[AsyncEngine]:
    engine = db.create_engine(DATABASE.url(suite.settings), pool_size=5)
    yield engine
    await engine.dispose()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def rates(wallet_engine: AsyncEngine) -> WalletService:
    """Exchange rates every wallet test may rely on (USD->CHF is deliberately missing)."""
    service = WalletService(lambda: WalletUnitOfWork(wallet_engine))
    for base, quote, rate in (("USD", "EUR", "0.9215"), ("USD", "JPY", "150.5")):
        await service.set_rate(base=base, quote=quote, rate=rate, source="test")
    return service


@dataclass
class PrivateWallet:
    settings: Settings
    engine: AsyncEngine
    service: WalletService


@pytest_asyncio.fixture(loop_scope="session")
async def private_wallet(migrated: Settings) -> AsyncIterator[PrivateWallet]:
    """A wallet database of its own, for tests that break the books on purpose. Snapshots
    every 5 events, so a short workload goes through several."""
    settings = migrated.model_copy(
        update={"database_prefix": f"{migrated.database_prefix}w{uuid.uuid4().hex[:6]}_"}
    )
    url = DATABASE.url(settings)
    DATABASE.migrate(settings)
    engine = db.create_engine(url, pool_size=5)
    try:
        service = WalletService(lambda: WalletUnitOfWork(engine, snapshot_every=5))
        yield PrivateWallet(settings, engine, service)
    finally:
        await engine.dispose()
        db.drop_database(url)

"""The gateway's unit of work is where a database failure becomes DependencyUnavailable."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from common import db
from common.errors import DependencyUnavailable
from common.ports import free_port
from gateway_service.adapters.uow import GatewayUnitOfWork


async def test_an_unreachable_database_is_dependency_unavailable() -> None:
    port = free_port()  # nothing listens there
    engine = db.create_engine(
        make_url(f"postgresql+psycopg://nobody:x@127.0.0.1:{port}/gateway"), pool_size=1
    )
    try:
        with pytest.raises(DependencyUnavailable) as caught:
            async with GatewayUnitOfWork(engine):
                pass
    finally:
        await engine.dispose()

    assert caught.value.__cause__ is not None

"""Wires the wallet service: database, unit of work, service layer, gRPC, outbox relay, and
the sweep that releases expired holds."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from common.aio import wait_any
from common.bootstrap import LOOP_HEARTBEAT_S, Infra, ServiceDatabase
from common.config import Settings
from common.errors import DomainError
from common.events import WALLET_STREAM
from common.grpc.auth import authenticator
from common.grpc.server import ServiceRuntime, create_server
from common.supervision import Task, beat
from paysuite.wallet.v1 import wallet_pb2_grpc
from wallet_service.adapters import metrics
from wallet_service.adapters.event_mapping import publisher
from wallet_service.adapters.repository import AccountCache
from wallet_service.adapters.uow import WalletUnitOfWork
from wallet_service.domain.account import Limits
from wallet_service.entrypoints.grpc_servicer import POLICY, SERVICE_NAME, WalletServicer
from wallet_service.service_layer.services import WalletService

NAME = "wallet-service"
DATABASE = ServiceDatabase("wallets", Path(__file__).parent / "adapters" / "migrations")

log = structlog.get_logger(__name__)


def build_service(
    settings: Settings, infra: Infra, *, reader: AsyncEngine | None = None
) -> WalletService:
    """`reader`: a read-only engine for the lone reads (common.db.create_engine)."""
    known_system: set[str] = set()
    cache = AccountCache()
    publish = publisher(settings.wallet_published_event_patterns())

    def on(engine: AsyncEngine) -> Callable[[], WalletUnitOfWork]:
        return lambda: WalletUnitOfWork(
            engine,
            known_system=known_system,
            cache=cache,
            snapshot_every=settings.wallet_snapshot_every,
            publish=publish,
        )

    return WalletService(
        on(infra.engine),
        reader=on(reader) if reader is not None else None,
        limits=Limits(
            max_operation_minor=settings.wallet_max_operation_minor,
            max_balance_minor=settings.wallet_max_balance_minor,
        ),
        group_commit=True,
        observe=metrics.observe,
    )


async def sweep_expired_holds(
    service: WalletService, stop: asyncio.Event, *, interval_s: float
) -> None:
    """Releases expired holds until stopped; a failed round is logged and tried again later."""
    while not stop.is_set():
        beat()
        try:
            expired = await service.expire_holds()
            if expired:
                log.info("holds.expired", count=len(expired))
        except DomainError as exc:
            log.warning("holds.sweep_failed", error=exc.message)
        await wait_any(stop, at_most_s=interval_s)


async def build(settings: Settings, address: str) -> ServiceRuntime:
    auth = authenticator(settings, POLICY)  # a missing key is a ConfigError before any connection
    infra = Infra.connect(settings, DATABASE)
    # A capture batch reads its holds concurrently, each on a connection of its own.
    service = build_service(settings, infra, reader=infra.reader(pool_size=4))
    servicer = WalletServicer(service)
    server, port, health = create_server(
        address,
        registrars=[lambda s: wallet_pb2_grpc.add_WalletServiceServicer_to_server(servicer, s)],
        service_names=[SERVICE_NAME],
        auth=auth,
        max_connection_age_s=settings.grpc_max_connection_age_s,
    )
    interval_s = settings.wallet_hold_sweep_interval_ms / 1000

    async def sweeper(stop: asyncio.Event) -> None:
        await sweep_expired_holds(service, stop, interval_s=interval_s)

    return ServiceRuntime(
        name=NAME,
        server=server,
        port=port,
        health=health,
        service_names=[SERVICE_NAME],
        readiness_checks=[infra.ping_database, infra.ping_redis],
        progress_checks=[infra.outbox_progress()],
        background=[
            # Nobody in the suite reads it (it publishes only the types configured): what it
            # holds is for outside subscribers, by plain XREAD or groups of their own.
            infra.relay_task(broadcast=[WALLET_STREAM]),
            Task("hold expiry sweep", sweeper, heartbeat_s=interval_s + LOOP_HEARTBEAT_S),
        ],
        closers=[infra.close],
    )

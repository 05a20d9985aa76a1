"""Wires the wallet service: database, unit of work, service layer, gRPC, outbox relay."""

from __future__ import annotations

from pathlib import Path

from common.bootstrap import Infra, ServiceDatabase
from common.config import Settings
from common.grpc.server import ServiceRuntime, create_server
from paysuite.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from wallet_service.adapters.uow import WalletUnitOfWork
from wallet_service.entrypoints.grpc_servicer import WalletServicer
from wallet_service.service_layer.services import WalletService

NAME = "wallet-service"
DATABASE = ServiceDatabase("wallets", Path(__file__).parent / "adapters" / "migrations")
SERVICE_NAME = wallet_pb2.DESCRIPTOR.services_by_name["WalletService"].full_name


async def build(settings: Settings, address: str) -> ServiceRuntime:
    infra = Infra.connect(settings, DATABASE)
    service = WalletService(lambda: WalletUnitOfWork(infra.engine))
    servicer = WalletServicer(service)
    server, port, health = create_server(
        address,
        registrars=[lambda s: wallet_pb2_grpc.add_WalletServiceServicer_to_server(servicer, s)],
        service_names=[SERVICE_NAME],
    )
    return ServiceRuntime(
        name=NAME,
        server=server,
        port=port,
        health=health,
        service_names=[SERVICE_NAME],
        readiness_checks=[infra.ping_database, infra.ping_redis],
        background=[infra.relay().run],
        closers=[infra.close],
    )

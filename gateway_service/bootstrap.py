"""Wires the gateway service: database, unit of work, provider client, gRPC, outbox relay."""

from __future__ import annotations

from pathlib import Path

from common.bootstrap import Infra, ServiceDatabase
from common.config import Settings
from common.grpc.server import ServiceRuntime, create_server
from gateway_service.adapters.provider import SimulatorProvider, provider_session
from gateway_service.adapters.uow import GatewayUnitOfWork
from gateway_service.entrypoints.grpc_servicer import GatewayServicer
from gateway_service.service_layer.services import GatewayService
from paysuite.gateway.v1 import gateway_pb2, gateway_pb2_grpc

NAME = "gateway-service"
DATABASE = ServiceDatabase("gateway", Path(__file__).parent / "adapters" / "migrations")
SERVICE_NAME = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name


async def build(settings: Settings, address: str) -> ServiceRuntime:
    infra = Infra.connect(settings, DATABASE)
    session = provider_session(settings.provider_timeout_ms)
    provider = SimulatorProvider(session, base_url=settings.provider_url)
    service = GatewayService(uow=lambda: GatewayUnitOfWork(infra.engine), provider=provider)
    servicer = GatewayServicer(service)
    try:
        server, port, health = create_server(
            address,
            registrars=[
                lambda s: gateway_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, s)
            ],
            service_names=[SERVICE_NAME],
        )
    except BaseException:
        # Nothing owns these yet: a taken port must not leak the connections.
        await session.close()
        await infra.close()
        raise
    return ServiceRuntime(
        name=NAME,
        server=server,
        port=port,
        health=health,
        service_names=[SERVICE_NAME],
        readiness_checks=[infra.ping_database, infra.ping_redis],
        background=[infra.relay().run],
        # Run after the server has drained, so no in-flight charge loses its session.
        closers=[infra.close, session.close],
    )

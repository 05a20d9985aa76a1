"""Wires the gateway service: database, unit of work, providers, gRPC, outbox relay."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from common.bootstrap import Infra, ServiceDatabase
from common.config import Settings
from common.grpc.auth import authenticator
from common.grpc.server import ServiceRuntime, create_server
from common.supervision import Task
from gateway_service.adapters.metrics import ProviderMetrics, breaker_moved
from gateway_service.adapters.provider import SimulatorProvider, provider_session
from gateway_service.adapters.uow import GatewayUnitOfWork
from gateway_service.domain.breaker import BreakerOptions, CircuitBreaker, Transition
from gateway_service.entrypoints.grpc_servicer import POLICY, SERVICE_NAME, GatewayServicer
from gateway_service.service_layer.breaker_events import BreakerEvents
from gateway_service.service_layer.gateway import GatewayService
from gateway_service.service_layer.providers import GuardedProvider, ProviderRouter, RetryPolicy
from paysuite.gateway.v1 import gateway_pb2_grpc

NAME = "gateway-service"
DATABASE = ServiceDatabase("gateway", Path(__file__).parent / "adapters" / "migrations")


def breaker_options(settings: Settings) -> BreakerOptions:
    return BreakerOptions(
        failure_rate_threshold=settings.breaker_failure_rate,
        slow_call_rate_threshold=settings.breaker_slow_call_rate,
        slow_call_s=settings.breaker_slow_call_ms / 1000,
        window_s=settings.breaker_window_s,
        minimum_calls=settings.breaker_minimum_calls,
        reset_timeout_s=settings.breaker_reset_timeout_ms / 1000,
        half_open_calls=settings.breaker_half_open_calls,
    )


class _TransitionRelay:
    """Breakers are built before the service that publishes their transitions."""

    breakers: BreakerEvents | None = None

    def __call__(self, transition: Transition) -> None:
        breaker_moved(transition)
        if self.breakers is not None:
            self.breakers.on_breaker_transition(transition)


def build_router(
    settings: Settings, session: aiohttp.ClientSession, relay: _TransitionRelay
) -> ProviderRouter:
    options = breaker_options(settings)
    return ProviderRouter(
        [
            GuardedProvider(
                SimulatorProvider(session, name=config.name, base_url=config.url),
                CircuitBreaker(config.name, options, on_transition=relay),
                timeout_s=settings.provider_timeout_ms / 1000,
                metrics=ProviderMetrics(config.name),
                retry=RetryPolicy(attempts=settings.provider_attempts),
            )
            for config in settings.provider_configs()
        ]
    )


async def build(settings: Settings, address: str) -> ServiceRuntime:
    auth = authenticator(settings, POLICY)  # a missing key is a ConfigError before any connection
    infra = Infra.connect(settings, DATABASE)
    session = provider_session()
    relay = _TransitionRelay()
    service = GatewayService(
        uow=lambda: GatewayUnitOfWork(infra.engine),
        providers=build_router(settings, session, relay),
        sync_not_found_grace_s=settings.sync_not_found_grace_ms / 1000,
        group_commit=True,
    )
    relay.breakers = service.breakers
    servicer = GatewayServicer(service)
    try:
        server, port, health = create_server(
            address,
            registrars=[
                lambda s: gateway_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, s)
            ],
            service_names=[SERVICE_NAME],
            auth=auth,
            max_connection_age_s=settings.grpc_max_connection_age_s,
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
        progress_checks=[infra.outbox_progress()],
        background=[
            infra.relay_task(),
            # Waits on a queue for as long as no breaker moves: no heartbeat to keep.
            Task("breaker transitions", service.breakers.publish_breaker_transitions),
        ],
        # Run after the server has drained, so no in-flight charge loses its session.
        closers=[infra.close, session.close],
    )

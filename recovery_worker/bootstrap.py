"""Wires the worker: gRPC channels to the services, Redis, the sweeps and the loop that runs
them, served by the health-only gRPC server of `entrypoints.health`."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
from redis.asyncio import Redis

from common.config import Settings
from common.events import suite_stream_keys
from common.grpc.auth import authenticator
from common.grpc.client import create_channel
from common.grpc.server import ServiceRuntime
from common.tokens import ServiceToken
from recovery_worker.adapters import metrics
from recovery_worker.adapters.redis_store import (
    RedisLeases,
    RedisMarks,
    RedisPipeline,
    RedisRungMemory,
)
from recovery_worker.adapters.services import GrpcGateway, GrpcPayments, GrpcWallet
from recovery_worker.domain.ladder import Ladder
from recovery_worker.entrypoints import health
from recovery_worker.entrypoints.worker import Clock, RecoveryWorker
from recovery_worker.service_layer.reconcile import ReconcileSweep
from recovery_worker.service_layer.sweeps import (
    ExpiredHoldsSweep,
    InitiatedSweep,
    PendingSweep,
    PipelineSweep,
    RefundingSweep,
    Sweep,
)

NAME = "recovery-worker"


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Connections:
    """What the worker talks to; closed together."""

    redis: Redis
    payment: grpc.aio.Channel
    gateway: grpc.aio.Channel
    wallet: grpc.aio.Channel

    @classmethod
    def open(cls, settings: Settings) -> Connections:
        token = ServiceToken(settings, NAME)
        return cls(
            redis=Redis.from_url(settings.require_redis_url()),
            payment=create_channel(settings.payment_target, token=token),
            gateway=create_channel(settings.gateway_target, token=token),
            wallet=create_channel(settings.wallet_target, token=token),
        )

    async def close(self) -> None:
        for channel in (self.payment, self.gateway, self.wallet):
            await channel.close()
        await self.redis.aclose()


def build_sweeps(settings: Settings, connections: Connections) -> list[Sweep]:
    timeout_s = settings.rpc_timeout_ms / 1000
    payments = GrpcPayments(connections.payment, timeout_s=timeout_s)
    gateway = GrpcGateway(connections.gateway, timeout_s=timeout_s)
    wallet = GrpcWallet(connections.wallet, timeout_s=timeout_s)
    streams = suite_stream_keys(settings.stream_prefix)
    memory = RedisRungMemory(connections.redis, prefix=settings.stream_prefix)
    stuck_after = Ladder.starting_at(timedelta(seconds=settings.recovery_pending_after_s))
    refunding = Ladder.starting_at(timedelta(seconds=settings.recovery_refunding_after_s))
    return [
        PendingSweep(payments=payments, memory=memory, ladder=stuck_after),
        InitiatedSweep(payments=payments, memory=memory, ladder=stuck_after),
        RefundingSweep(payments=payments, memory=memory, ladder=refunding),
        ExpiredHoldsSweep(wallet=wallet),
        PipelineSweep(
            pipeline=RedisPipeline(connections.redis),
            streams=streams,
            stalled_after=timedelta(seconds=settings.recovery_stalled_after_s),
        ),
        ReconcileSweep(
            payments=payments,
            journal=wallet,
            operations=gateway,
            reviews=payments,
            marks=RedisMarks(connections.redis, prefix=settings.stream_prefix),
            every=timedelta(seconds=settings.recovery_reconcile_every_s),
            window=timedelta(seconds=settings.recovery_reconcile_window_s),
        ),
    ]


def build_worker(
    settings: Settings, connections: Connections, *, clock: Clock = utc_now
) -> RecoveryWorker:
    leases = RedisLeases(
        connections.redis,
        prefix=settings.stream_prefix,
        ttl=timedelta(seconds=settings.recovery_lease_s),
        owner=settings.replica_name or f"{socket.gethostname()}-{os.getpid()}",
    )
    return RecoveryWorker(
        sweeps=build_sweeps(settings, connections),
        leases=leases,
        clock=clock,
        interval_s=settings.recovery_interval_s,
        observe=metrics.observe,
    )


async def build(settings: Settings, address: str) -> ServiceRuntime:
    auth = authenticator(settings)  # a missing key is a ConfigError before any connection
    connections = Connections.open(settings)
    return health.serve(
        NAME,
        address,
        auth=auth,
        worker=build_worker(settings, connections),
        interval_s=settings.recovery_interval_s,
        redis=connections.redis,
        closers=[connections.close],
    )

"""The worker's process surface: a gRPC server that serves only health and reflection (so
`paysuite up`, Kubernetes probes and grpcurl see it like every other process), the sweep loop
as a supervised task, and Redis as the readiness check: without it no lease can be taken."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from redis.asyncio import Redis

from common.grpc.auth import Authenticator
from common.grpc.server import ServiceRuntime, create_server
from common.supervision import Task
from recovery_worker.entrypoints.worker import RecoveryWorker

# A round runs every sweep once; each item is bounded by an RPC deadline, so a round that
# takes this much longer than the interval is stuck.
RECOVERY_ROUND_SLACK_S = 300.0


def serve(
    name: str,
    address: str,
    *,
    auth: Authenticator,
    worker: RecoveryWorker,
    interval_s: float,
    redis: Redis,
    closers: Sequence[Callable[[], Awaitable[None]]],
) -> ServiceRuntime:
    server, port, health = create_server(address, registrars=[], service_names=[], auth=auth)

    async def ping_redis() -> None:
        await redis.ping()

    return ServiceRuntime(
        name=name,
        server=server,
        port=port,
        health=health,
        service_names=[],
        readiness_checks=[ping_redis],
        background=[
            Task("recovery sweeps", worker.run, heartbeat_s=interval_s + RECOVERY_ROUND_SLACK_S)
        ],
        closers=list(closers),
    )

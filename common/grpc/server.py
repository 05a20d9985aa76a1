"""Server bootstrap: a grpc.aio server with error mapping, health and reflection, and the
background tasks (outbox relay, stream consumers, sweeps) that live beside it, each under the
process's one `TaskSupervisor`.

Health: readiness ("" and the service names) is SERVING only while every dependency answers
and no background task has a problem; liveness is SERVING unless a background task keeps
failing or stalls, which only a restart of the process can mend.

`ServiceRuntime` is what each service's bootstrap builds; `serve()` is what `python -m <svc>`
runs. Tests build a runtime on port 0 and start/stop it in-process.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from common.aio import wait_any
from common.grpc.auth import Authenticator
from common.grpc.decoding import DecodeGuardInterceptor
from common.grpc.errors import ErrorMappingInterceptor
from common.looplag import loop_lag_task
from common.supervision import Policy, Task, TaskSupervisor

log = structlog.get_logger(__name__)

Check = Callable[[], Awaitable[None]]


class ProgressCheck(Protocol):
    """Whether work that should be moving is (e.g. the outbox): a problem, or None."""

    async def problem(self) -> str | None: ...

    def reset(self) -> None: ...


Closer = Callable[[], Awaitable[None]]
Registrar = Callable[[grpc.aio.Server], None]

HEALTH_INTERVAL_S = 2.0
# Health service name that answers SERVING while the process can do its work: a background
# task that keeps failing or stalls turns it NOT_SERVING. Kubernetes' liveness probes ask for
# it, so an outage of PostgreSQL or Redis takes replicas out of rotation (readiness: "" and
# the service names) without restarting them all, while a dead relay restarts its process.
LIVENESS = "liveness"


@dataclass
class ServiceRuntime:
    """A service process's parts: its server, what runs beside it, and how to close it."""

    name: str
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: Sequence[str]
    readiness_checks: Sequence[Check] = ()
    progress_checks: Sequence[ProgressCheck] = ()
    background: list[Task] = field(default_factory=list)
    closers: list[Closer] = field(default_factory=list)
    supervision: Policy = field(default_factory=Policy)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _supervisor: TaskSupervisor | None = None
    _problems: list[str] = field(default_factory=list)

    async def start(self) -> None:
        await self._set_health(serving=False)
        await self._set_liveness(alive=True)
        await self.server.start()
        self._supervisor = TaskSupervisor(self.name, policy=self.supervision)
        self._tasks = self._supervisor.start([*self.background, loop_lag_task()], self._stop)
        self._tasks.append(asyncio.create_task(self._probe_readiness(), name="readiness"))
        log.info("service.started", service=self.name, port=self.port)

    def problems(self) -> list[str]:
        """What the last health round found wrong with the background work (empty: none)."""
        return list(self._problems)

    async def stop(self, grace: float = 5.0) -> None:
        await self.health.enter_graceful_shutdown()
        self._stop.set()
        await self.server.stop(grace)
        # Background work sees the stop and finishes what it holds (a transaction, a blocking
        # read); cancelling it mid-statement would leave connections for the GC to find.
        if self._tasks:
            _, unfinished = await asyncio.wait(self._tasks, timeout=max(grace, 1.5))
            for task in unfinished:
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for close in reversed(self.closers):
            await close()
        log.info("service.stopped", service=self.name)

    async def _probe_readiness(self) -> None:
        """SERVING only while every dependency answers and the background work is sound:
        Kubernetes then routes around us, and restarts us when the work is not."""
        while not self._stop.is_set():
            try:
                await self._probe_once()
            except Exception:  # the probe itself must outlive any bug in a round
                log.exception("service.health_probe_failed", service=self.name)
            await wait_any(self._stop, at_most_s=HEALTH_INTERVAL_S)

    async def _probe_once(self) -> None:
        problems = self._supervisor.problems() if self._supervisor else []
        if problems != self._problems:
            self._report(problems)
        await self._set_liveness(alive=not problems)
        try:
            for check in self.readiness_checks:
                await asyncio.wait_for(check(), timeout=HEALTH_INTERVAL_S)
            stalls = await self._stalls()
            await self._set_health(serving=not problems and not stalls)
        except Exception as exc:
            log.warning("service.not_ready", service=self.name, error=repr(exc))
            for progress in self.progress_checks:
                progress.reset()
            await self._set_health(serving=False)

    async def _stalls(self) -> list[str]:
        stalls = []
        for progress in self.progress_checks:
            found = await asyncio.wait_for(progress.problem(), timeout=HEALTH_INTERVAL_S)
            if found:
                stalls.append(found)
        if stalls:
            log.error("service.stalled", service=self.name, problems=stalls)
        return stalls

    def _report(self, problems: list[str]) -> None:
        self._problems = problems
        if problems:
            log.error("service.not_serving", service=self.name, problems=problems)
        else:
            log.info("service.background_recovered", service=self.name)

    async def _set_liveness(self, *, alive: bool) -> None:
        await self.health.set(
            LIVENESS,
            health_pb2.HealthCheckResponse.SERVING
            if alive
            else health_pb2.HealthCheckResponse.NOT_SERVING,
        )

    async def _set_health(self, *, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self.service_names):
            await self.health.set(name, status)


MAX_REQUEST_BYTES = 1 << 20
MAX_RESPONSE_BYTES = 4 << 20


def server_options(*, max_connection_age_s: int = 0) -> list[tuple[str, int]]:
    options = [
        ("grpc.so_reuseport", 0),
        # Our largest request is a few hundred bytes; nobody needs to send us megabytes.
        ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
        ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
    ]
    if max_connection_age_s:
        # No grace limit: a WatchPayment stream outlives its connection's age untouched.
        options.append(("grpc.max_connection_age_ms", max_connection_age_s * 1000))
    return options


def create_server(
    address: str,
    *,
    registrars: Sequence[Registrar],
    service_names: Sequence[str],
    auth: Authenticator,
    max_connection_age_s: int = 0,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """A server with our interceptors, health and reflection, bound to `address` (port 0 ok);
    `auth` decides who may call what; `max_connection_age_s`: Settings.grpc_max_connection_age_s."""
    server = grpc.aio.server(
        # The decode guard answers undecodable requests before anything else runs; the error
        # mapping also opens the request's span and records its metrics (one layer for all
        # three: each layer costs ~20 us of CPU per call).
        interceptors=[DecodeGuardInterceptor(), ErrorMappingInterceptor(auth)],
        options=server_options(max_connection_age_s=max_connection_age_s),
    )
    for register in registrars:
        register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind gRPC server to {address}")
    return server, port, health_servicer


async def run_until_signalled(runtime: ServiceRuntime, *, grace: float) -> None:
    """Starts the runtime, waits for SIGTERM/SIGINT, then drains in-flight calls and stops."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await runtime.start()
    await stop.wait()
    log.info("service.stopping", service=runtime.name, grace_s=grace)
    await runtime.stop(grace)

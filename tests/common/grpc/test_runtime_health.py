"""A service runtime's health tells the truth about its background work: a real server on
port 0, asked over a real channel."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.grpc.server import LIVENESS, ServiceRuntime, create_server
from common.supervision import Policy, Task
from tests.tokens import make_authenticator

pytestmark = pytest.mark.asyncio(loop_scope="session")

QUICK = Policy(first_delay_s=0.01, max_delay_s=0.05, unhealthy_after=3, watch_every_s=0.05)


async def status(port: int, service: str) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=service)
        response = await stub.Check(request)  # type: ignore[attr-defined]  # typeshed stub lists no methods
        return int(response.status)


async def eventually(port: int, service: str, wanted: int) -> None:
    for _ in range(400):  # 20 s: the probe runs every 2 s, slower on a loaded machine
        if await status(port, service) == wanted:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{service or 'readiness'} never became {wanted}")


async def runtime_with(task: Task) -> ServiceRuntime:
    server, port, health = create_server(
        "127.0.0.1:0", registrars=[], service_names=[], auth=make_authenticator()
    )
    return ServiceRuntime(
        name="test",
        server=server,
        port=port,
        health=health,
        service_names=[],
        background=[task],
        supervision=QUICK,
    )


async def test_a_background_task_that_keeps_failing_turns_liveness_not_serving() -> None:
    async def broken(_stop: asyncio.Event) -> None:
        raise RuntimeError("relay floor")

    runtime = await runtime_with(Task("outbox relay", broken))
    await runtime.start()
    try:
        await eventually(runtime.port, LIVENESS, health_pb2.HealthCheckResponse.NOT_SERVING)
        assert await status(runtime.port, "") == health_pb2.HealthCheckResponse.NOT_SERVING
        assert "outbox relay" in runtime.problems()[0]
    finally:
        await runtime.stop(0)


async def test_sound_background_work_keeps_the_process_live_and_ready() -> None:
    async def steady(stop: asyncio.Event) -> None:
        await stop.wait()

    runtime = await runtime_with(Task("steady", steady))
    await runtime.start()
    try:
        await eventually(runtime.port, "", health_pb2.HealthCheckResponse.SERVING)
        assert await status(runtime.port, LIVENESS) == health_pb2.HealthCheckResponse.SERVING
        assert runtime.problems() == []
    finally:
        await runtime.stop(0)

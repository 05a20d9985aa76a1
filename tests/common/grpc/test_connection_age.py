"""Servers close each connection after PAYSUITE_GRPC_MAX_CONNECTION_AGE_S so that callers behind
a headless Service dial again (and so find new replicas): no caller may notice. A real server on
port 0 with a one-second age, asked over a channel with the suite's own options."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.config import Settings
from common.grpc.client import channel_options, create_channel
from common.grpc.server import create_server, server_options
from tests.tokens import make_authenticator

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_the_age_is_a_server_option_only_when_set() -> None:
    assert ("grpc.max_connection_age_ms", 300_000) in server_options(max_connection_age_s=300)
    assert all(name != "grpc.max_connection_age_ms" for name, _ in server_options())


@pytest.mark.asyncio(loop_scope="session")
async def test_calls_and_streams_go_on_across_connection_ages() -> None:
    server, port, health = create_server(
        "127.0.0.1:0",
        registrars=[],
        service_names=[],
        auth=make_authenticator(),
        max_connection_age_s=1,
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=channel_options()
        ) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            watch = stub.Watch(health_pb2.HealthCheckRequest(service=""))  # type: ignore[attr-defined]  # typeshed stub lists no methods
            assert (await watch.read()).status == SERVING
            # Three and a half ages of calls: each age ends in a GOAWAY and a new connection.
            loop = asyncio.get_running_loop()
            until = loop.time() + 3.5
            calls = 0
            while loop.time() < until:
                response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)  # type: ignore[attr-defined]  # typeshed stub lists no methods
                assert response.status == SERVING
                calls += 1
                await asyncio.sleep(0.05)
            # The stream opened on the first connection still delivers (no grace limit).
            await health.set("", NOT_SERVING)
            assert (await asyncio.wait_for(watch.read(), 5)).status == NOT_SERVING
            watch.cancel()
        assert calls > 20
    finally:
        await server.stop(None)


@pytest.mark.asyncio(loop_scope="session")
async def test_a_dns_target_reaches_the_server_behind_the_name() -> None:
    """What k8s/ gives callers (dns:///wallet:50052), on a name this machine resolves."""
    server, port, _ = create_server(
        "127.0.0.1:0", registrars=[], service_names=[], auth=make_authenticator()
    )
    await server.start()
    try:
        target = Settings(wallet_target=f"dns:///localhost:{port}").wallet_target
        async with create_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)  # type: ignore[attr-defined]  # typeshed stub lists no methods
        assert response.status == SERVING
    finally:
        await server.stop(None)

"""The gRPC metrics interceptors, on a real server and channel (health service, port 0)."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from common.grpc.client import create_channel
from common.grpc.metrics import code_name, split_method
from common.grpc.server import create_server
from tests.tokens import make_authenticator

HEALTH = "grpc.health.v1.Health"


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_split_method_names_service_and_method() -> None:
    assert split_method("/paysuite.payment.v1.PaymentService/CreateDeposit") == (
        "paysuite.payment.v1.PaymentService",
        "CreateDeposit",
    )
    assert split_method(b"/a.B/C") == ("a.B", "C")
    assert split_method("garbage") == ("unknown", "garbage")


def test_code_name_accepts_enum_int_and_none() -> None:
    assert code_name(grpc.StatusCode.NOT_FOUND, "OK") == "NOT_FOUND"
    assert code_name(5, "OK") == "NOT_FOUND"
    assert code_name(None, "OK") == "OK"
    assert code_name(999, "UNKNOWN") == "UNKNOWN"


@pytest.mark.asyncio(loop_scope="session")
async def test_server_and_client_count_calls_by_code_and_time_them() -> None:
    server, port, health = create_server(
        "127.0.0.1:0", registrars=[], service_names=[], auth=make_authenticator()
    )
    await server.start()
    await health.set("known", health_pb2.HealthCheckResponse.SERVING)
    ok = {"grpc_service": HEALTH, "grpc_method": "Check", "grpc_code": "OK"}
    missing = {**ok, "grpc_code": "NOT_FOUND"}
    timed = {"grpc_service": HEALTH, "grpc_method": "Check"}
    before = {
        name: (value(name, **ok), value(name, **missing))
        for name in ("grpc_server_handled_total", "grpc_client_handled_total")
    }
    server_timed = value("grpc_server_handling_seconds_count", **timed)
    client_timed = value("grpc_client_handling_seconds_count", **timed)
    try:
        async with create_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            await stub.Check(health_pb2.HealthCheckRequest(service="known"))  # type: ignore[attr-defined]
            await stub.Check(health_pb2.HealthCheckRequest(service="known"))  # type: ignore[attr-defined]
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.Check(health_pb2.HealthCheckRequest(service="nope"))  # type: ignore[attr-defined]
            assert raised.value.code() is grpc.StatusCode.NOT_FOUND
    finally:
        await server.stop(0)
    for name, (ok_before, missing_before) in before.items():
        assert value(name, **ok) - ok_before == 2, name
        assert value(name, **missing) - missing_before == 1, name
    assert value("grpc_server_handling_seconds_count", **timed) - server_timed == 3
    assert value("grpc_client_handling_seconds_count", **timed) - client_timed == 3

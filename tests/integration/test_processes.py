"""`python -m <service>` as Kubernetes runs it: a real process that becomes SERVING once its
database and Redis answer, and drains and exits 0 on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.config import Settings
from common.grpc.auth import bearer_channel
from tests.processes import spawn, start
from tests.tokens import make_token

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

SERVICES = {
    "wallet_service": "PAYSUITE_WALLET_LISTEN",
    "gateway_service": "PAYSUITE_GATEWAY_LISTEN",
    "payment_service": "PAYSUITE_PAYMENT_LISTEN",
}


def _env(settings: Settings, listen_var: str) -> dict[str, str]:
    return {
        "PAYSUITE_DATABASE_URL": settings.require_database_url(),
        "PAYSUITE_REDIS_URL": settings.require_redis_url(),
        "PAYSUITE_DATABASE_PREFIX": settings.database_prefix,
        "PAYSUITE_STREAM_PREFIX": settings.stream_prefix,
        "PAYSUITE_LOG_FORMAT": "json",
        listen_var: "127.0.0.1:0",
    }


def _port(log: bytes) -> int:
    for line in log.splitlines():
        record = json.loads(line)
        if record.get("event") == "service.started":
            return int(record["port"])
    raise AssertionError(f"no service.started line in {log.decode()}")


async def _serving(port: int) -> bool:
    async with bearer_channel(f"127.0.0.1:{port}", make_token()) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(100):
            response = await stub.Check(health_pb2.HealthCheckRequest())  # type: ignore[attr-defined]
            if response.status == health_pb2.HealthCheckResponse.SERVING:
                return True
            await asyncio.sleep(0.1)
    return False


@pytest.mark.parametrize(("module", "listen_var"), sorted(SERVICES.items()))
async def test_service_process_serves_then_stops_gracefully_on_sigterm(
    migrated: Settings, module: str, listen_var: str
) -> None:
    started = await start(module, b"service.started", **_env(migrated, listen_var))
    try:
        assert await _serving(_port(started.log))
    finally:
        code, rest = await started.stop(signal.SIGTERM)
    assert code == 0, (started.log + rest).decode()
    assert b"service.stopped" in rest
    assert b"Traceback" not in rest


async def test_bad_configuration_is_refused_with_the_variable_named(migrated: Settings) -> None:
    env = _env(migrated, "PAYSUITE_WALLET_LISTEN") | {"PAYSUITE_WALLET_LISTEN": "nowhere"}

    process = await spawn("wallet_service", **env)
    async with asyncio.timeout(15):
        _, err = await process.communicate()
    assert process.returncode == 2
    assert b"PAYSUITE_WALLET_LISTEN" in err
    assert b"Traceback" not in err

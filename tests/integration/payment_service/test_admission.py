"""Admission control on a real payment service replica over real gRPC, Redis and HTTP: a caller
over its rate is refused RESOURCE_EXHAUSTED with RetryInfo while another role is not; a saga
backlog over the bound sheds creates, under it they are accepted; the facade answers 429 with
Retry-After; and the Lua token bucket agrees with its Python twin."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import grpc
import pytest
from redis.asyncio import Redis

from common.auth import Principal, Role
from common.events import PAYMENT_SAGA_STREAM
from common.grpc.auth import bearer_channel
from common.grpc.client import error_info
from common.grpc.retry_info import retry_delay_s
from common.ratelimit import Rate, RedisRateLimiter, take
from common.streams import heartbeat_key
from payment_service.entrypoints.payment_events import GROUP as SAGA_GROUP
from paysuite.payment.v1 import payment_pb2, payment_pb2_grpc
from paysuite.wallet.v1 import wallet_pb2
from tests.conftest import Suite
from tests.integration.helpers import clients, usd
from tests.tokens import make_token

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@asynccontextmanager
async def replica(suite: Suite, **settings: Any) -> AsyncIterator[str]:
    """A second payment service replica (its own consumer names) with these settings."""
    from payment_service import bootstrap

    configured = suite.settings.model_copy(
        update={"replica_name": f"admission-{uuid.uuid4().hex[:8]}", **settings}
    )
    runtime = await bootstrap.build(configured, "127.0.0.1:0")
    await runtime.start()
    try:
        yield f"127.0.0.1:{runtime.port}"
    finally:
        await runtime.stop(grace=0.5)


async def owned_account(suite: Suite, owner: str) -> str:
    async with clients(suite) as c:
        account = await c.wallet.OpenAccount(
            wallet_pb2.OpenAccountRequest(
                operation_ref=str(uuid.uuid4()), owner_id=owner, currency="USD"
            )
        )
    return account.account_id


async def deposit(target: str, token: str, account_id: str, key: str = "") -> payment_pb2.Payment:
    async with bearer_channel(target, token) as channel:
        payment: payment_pb2.Payment = await payment_pb2_grpc.PaymentServiceStub(
            channel
        ).CreateDeposit(
            payment_pb2.CreateDepositRequest(
                idempotency_key=key or uuid.uuid4().hex,
                account_id=account_id,
                amount=usd(500),
                payment_method="pm_card_ok",
            ),
            timeout=10,
        )
    return payment


async def test_a_caller_over_its_rate_is_refused_with_retry_info_and_others_are_not(
    suite: Suite,
) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    account = await owned_account(suite, user)
    token = make_token(user, Role.USER)
    async with replica(suite, admission_max_backlog=0, rate_limits="user=1:2") as target:
        await deposit(target, token, account)
        await deposit(target, token, account)
        key = uuid.uuid4().hex
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await deposit(target, token, account, key)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_info(refused.value)[0] == "RATE_LIMITED"
        delay = retry_delay_s(refused.value)
        assert delay is not None
        assert 0 < delay <= 1.0
        # A service (a role without a limit) is not slowed by the user's bucket.
        for _ in range(4):
            await deposit(target, make_token(), account)
        await asyncio.sleep(delay)
        payment = await deposit(target, token, account, key)  # the same key, now admitted
        assert payment.idempotency_key == key


@asynccontextmanager
async def stuck_saga_entries(redis: Redis, stream: str, count: int) -> AsyncIterator[None]:
    """`count` entries delivered to the saga group's consumer `stuck`, which stays alive and
    never acknowledges them: pending, and never claimed by the live consumers."""
    consumer = f"stuck-{uuid.uuid4().hex[:8]}"
    alive = heartbeat_key(stream, SAGA_GROUP, consumer)
    await redis.set(alive, int(time.time()), px=120_000)
    # One transaction: the live consumers, blocked on new entries, cannot take them first.
    pipe = redis.pipeline(transaction=True)
    for _ in range(count):
        pipe.xadd(stream, {b"admission-test": b"not an event"})
    pipe.xreadgroup(SAGA_GROUP, consumer, {stream: ">"}, count=count)
    *ids, _delivered = await pipe.execute()
    try:
        yield
    finally:
        await redis.xack(stream, SAGA_GROUP, *ids)
        await redis.xdel(stream, *ids)
        await redis.xgroup_delconsumer(stream, SAGA_GROUP, consumer)
        await redis.delete(alive)


async def until_accepted(target: str, account: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await deposit(target, make_token(), account)
            return
        except grpc.aio.AioRpcError as exc:
            if exc.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_a_backlog_over_the_bound_sheds_creates_and_under_it_they_are_accepted(
    suite: Suite, redis: Redis
) -> None:
    account = await owned_account(suite, "test-owner")
    stream = suite.settings.stream_prefix + PAYMENT_SAGA_STREAM
    async with replica(suite, admission_max_backlog=5, admission_retry_after_ms=300) as target:
        await until_accepted(target, account)  # whatever earlier tests left has drained
        async with stuck_saga_entries(redis, stream, 8):
            deadline = time.monotonic() + 5
            while True:  # the sampler sees it within a sample or two
                try:
                    await deposit(target, make_token(), account)
                except grpc.aio.AioRpcError as exc:
                    refused = exc
                    break
                assert time.monotonic() < deadline, "the backlog was never seen"
                await asyncio.sleep(0.1)
            assert refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert error_info(refused)[0] == "OVERLOADED"
            assert retry_delay_s(refused) == pytest.approx(0.3, abs=0.16)
        await until_accepted(target, account)


async def test_the_facade_answers_429_with_retry_after(suite: Suite) -> None:
    from webhook_adapter.app import start

    user = f"user-{uuid.uuid4().hex[:8]}"
    account = await owned_account(suite, user)
    headers = {"Authorization": f"Bearer {make_token(user, Role.USER)}"}
    body = {"amount_minor": 700, "currency": "USD"}
    async with replica(suite, admission_max_backlog=0, rate_limits="user=0.5:1") as target:
        runner, port = await start(
            suite.settings.model_copy(update={"payment_target": target}), "127.0.0.1:0"
        )
        try:
            async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
                answers = []
                for _ in range(2):
                    async with http.post(
                        f"/account/{account}/deposit",
                        json=body,
                        headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
                    ) as response:
                        answers.append(
                            (
                                response.status,
                                response.headers.get("Retry-After"),
                                await response.json(),
                            )
                        )
        finally:
            await runner.cleanup()
    assert answers[0][0] == 202
    status, retry_after, error = answers[1]
    assert status == 429
    assert retry_after == "2"  # a token every 2 s, rounded up to whole seconds
    assert error["error"]["code"] == "resource_exhausted"
    assert error["error"]["reason"] == "RATE_LIMITED"
    assert error["retry_after_s"] == 2


async def test_the_lua_bucket_agrees_with_its_python_twin(redis: Redis) -> None:
    rate = Rate(per_s=1.0, burst=3.0)
    limiter = RedisRateLimiter(redis, {"user": rate}, key_prefix=f"t{uuid.uuid4().hex[:6]}.")
    caller = Principal(f"user-{uuid.uuid4().hex[:8]}", frozenset({Role.USER}))
    in_redis = [await limiter.wait_s(caller) for _ in range(4)]
    bucket, twin = None, []
    for _ in range(4):
        bucket, wait = take(bucket, rate, now=0.0)
        twin.append(wait)
    assert in_redis[:3] == twin[:3] == [0.0, 0.0, 0.0]
    assert twin[3] == 1.0
    assert 0.9 < in_redis[3] <= 1.0  # the calls took a little time, which refilled a little

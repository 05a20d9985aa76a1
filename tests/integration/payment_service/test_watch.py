"""WatchPayment across replicas: a watcher on one payment-service replica sees every state a
deposit made through another replica passes through, in order, and the stream ends at the
terminal state. Real processes' worth of pieces: two in-process replicas on real sockets, the
same PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio

from common.grpc.auth import bearer_channel
from common.grpc.server import ServiceRuntime
from payment_service import bootstrap as payment
from paysuite.payment.v1 import payment_pb2 as P
from paysuite.payment.v1 import payment_pb2_grpc
from tests.conftest import Suite
from tests.integration.helpers import clients, open_account, usd
from tests.tokens import make_token

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(loop_scope="session")
async def second_replica(suite: Suite) -> AsyncIterator[str]:
    runtime: ServiceRuntime = await payment.build(suite.settings, "127.0.0.1:0")
    await runtime.start()
    try:
        yield f"127.0.0.1:{runtime.port}"
    finally:
        await runtime.stop(grace=0.5)


async def test_a_watcher_on_another_replica_sees_every_state_until_completed(
    suite: Suite, second_replica: str
) -> None:
    async with clients(suite) as c, bearer_channel(second_replica, make_token()) as channel:
        account_id = await open_account(c)
        created = await c.payments.CreateDeposit(
            P.CreateDepositRequest(
                idempotency_key=f"it-{uuid.uuid4()}", account_id=account_id, amount=usd(450)
            )
        )
        watcher = payment_pb2_grpc.PaymentServiceStub(channel)
        seen = [
            (p.version, p.status)
            async for p in watcher.WatchPayment(
                P.WatchPaymentRequest(payment_id=created.payment_id), timeout=30
            )
        ]
    # Every state from the one current when the watch began; the stream then ends by itself.
    assert seen[-1] == (3, P.PAYMENT_STATUS_COMPLETED)
    expected = [(1, P.PAYMENT_STATUS_INITIATED), (2, P.PAYMENT_STATUS_PENDING), seen[-1]]
    assert seen == expected[expected.index(seen[0]) :]


async def test_watching_an_unknown_payment_is_not_found(suite: Suite) -> None:
    async with clients(suite) as c:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in c.payments.WatchPayment(
                P.WatchPaymentRequest(payment_id=str(uuid.uuid4()))
            ):
                pass
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_watch_started_before_the_deposit_moves_sees_each_transition(
    suite: Suite,
) -> None:
    """With the simulator settling after 300 ms, the watch starts at initiated."""
    async with clients(suite) as c:
        account_id = await open_account(c)
        created = await c.payments.CreateDeposit(
            P.CreateDepositRequest(
                idempotency_key=f"it-{uuid.uuid4()}", account_id=account_id, amount=usd(451)
            )
        )
        stream = c.payments.WatchPayment(P.WatchPaymentRequest(payment_id=created.payment_id))
        statuses = await asyncio.wait_for(_statuses(stream), 30)
    assert statuses[-1] == P.PAYMENT_STATUS_COMPLETED
    assert P.PAYMENT_STATUS_PENDING in statuses


async def _statuses(stream: AsyncIterator[P.Payment]) -> list[int]:
    return [p.status async for p in stream]

"""Small helpers for integration tests: stubs on real channels, waiting, reading streams."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from redis.asyncio import Redis

from common.grpc.auth import bearer_channel
from paysuite.common.v1 import money_pb2
from paysuite.events.v1 import events_pb2
from paysuite.payment.v1 import payment_pb2, payment_pb2_grpc
from paysuite.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from tests.conftest import Suite
from tests.tokens import make_token


@dataclass
class Clients:
    wallet: wallet_pb2_grpc.WalletServiceAsyncStub
    payments: payment_pb2_grpc.PaymentServiceAsyncStub


@asynccontextmanager
async def clients(suite: Suite, bearer: str = "") -> AsyncIterator[Clients]:
    """Stubs of the wallet and payment services, calling as a service unless given a token."""
    bearer = bearer or make_token()
    wallet_channel = bearer_channel(suite.wallet_target, bearer)
    payment_channel = bearer_channel(suite.payment_target, bearer)
    async with wallet_channel, payment_channel:
        yield Clients(
            wallet=wallet_pb2_grpc.WalletServiceStub(wallet_channel),
            payments=payment_pb2_grpc.PaymentServiceStub(payment_channel),
        )


def usd(amount_minor: int) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=amount_minor, currency="USD")


async def open_account(c: Clients, currency: str = "USD") -> str:
    account = await c.wallet.OpenAccount(
        wallet_pb2.OpenAccountRequest(
            operation_ref=str(uuid.uuid4()), owner_id="test-owner", currency=currency
        )
    )
    return account.account_id


async def wait_for_status(
    c: Clients, payment_id: str, statuses: set[int], timeout_s: float = 20.0
) -> payment_pb2.Payment:
    deadline = time.monotonic() + timeout_s
    while True:
        payment = await c.payments.GetPayment(payment_pb2.GetPaymentRequest(payment_id=payment_id))
        if payment.status in statuses:
            return payment
        if time.monotonic() > deadline:
            name = payment_pb2.PaymentStatus.Name(payment.status)
            raise AssertionError(f"payment {payment_id} still {name} after {timeout_s}s")
        await asyncio.sleep(0.05)


async def stream_events(
    redis: Redis, stream: str, aggregate_id: str
) -> list[events_pb2.EventEnvelope]:
    found = []
    for _entry_id, fields in await redis.xrange(stream):
        envelope = events_pb2.EventEnvelope.FromString(fields[b"envelope"])
        if envelope.aggregate_id == aggregate_id:
            found.append(envelope)
    return found


async def wait_for_events(
    redis: Redis, stream: str, aggregate_id: str, count: int, timeout_s: float = 10.0
) -> list[events_pb2.EventEnvelope]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = await stream_events(redis, stream, aggregate_id)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


def _details(exc: grpc.aio.AioRpcError) -> list[any_pb2.Any]:
    raw = dict(exc.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert isinstance(raw, bytes), "error status without rich details"
    return list(status_pb2.Status.FromString(raw).details)


def error_details(exc: grpc.aio.AioRpcError) -> tuple[list[str], str]:
    """The BadRequest field names and the ErrorInfo reason carried by an error status."""
    fields: list[str] = []
    reason = ""
    for detail in _details(exc):
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
    return fields, reason


def resource_info(exc: grpc.aio.AioRpcError) -> tuple[str, str] | None:
    """The (type, name) of the google.rpc.ResourceInfo a NOT_FOUND carries, if any."""
    for detail in _details(exc):
        if detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
            info = error_details_pb2.ResourceInfo()
            detail.Unpack(info)
            return info.resource_type, info.resource_name
    return None

"""Two wallet processes behind one target, as `paysuite up` runs them with
PAYSUITE_WALLET_REPLICAS=2: a channel to `ipv4:a,b` spreads its calls over both (round robin),
whether it is the services' channel (create_channel) or the bench's (bearer_channel)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from bench.counters import read_metrics
from common.config import Settings
from common.grpc.auth import bearer_channel
from common.grpc.client import create_channel
from common.ports import free_ports
from devstack.supervisor import replica_target
from paysuite.common.v1 import money_pb2
from paysuite.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from tests.processes import Started, start
from tests.tokens import make_token

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

W = wallet_pb2
CALLS = 40


def _port(log: bytes) -> int:
    for line in log.splitlines():
        record = json.loads(line)
        if record.get("event") == "service.started":
            return int(record["port"])
    raise AssertionError(f"no service.started line in {log.decode()}")


@pytest_asyncio.fixture(loop_scope="session")
async def replicas(migrated: Settings) -> AsyncIterator[list[tuple[str, str]]]:
    """Two wallet processes: [(gRPC address, /metrics URL)], each its own replica."""
    metrics = free_ports(2)
    started: list[Started] = []
    try:
        for i, metrics_port in enumerate(metrics):
            started.append(
                await start(
                    "wallet_service",
                    b"service.started",
                    PAYSUITE_DATABASE_URL=migrated.require_database_url(),
                    PAYSUITE_REDIS_URL=migrated.require_redis_url(),
                    PAYSUITE_DATABASE_PREFIX=migrated.database_prefix,
                    PAYSUITE_STREAM_PREFIX=migrated.stream_prefix,
                    PAYSUITE_LOG_FORMAT="json",
                    PAYSUITE_WALLET_LISTEN="127.0.0.1:0",
                    PAYSUITE_METRICS_PORT=str(metrics_port),
                    PAYSUITE_METRICS_HOST="127.0.0.1",
                    PAYSUITE_REPLICA_NAME=f"test-wallet-{i + 1}-{uuid.uuid4().hex[:6]}",
                )
            )
        yield [
            (f"127.0.0.1:{_port(s.log)}", f"http://127.0.0.1:{port}/metrics")
            for s, port in zip(started, metrics, strict=True)
        ]
    finally:
        for process in started:
            await process.stop()


def _credits(url: str) -> float:
    """Credit calls the replica has handled, whatever their status."""
    total = 0.0
    for family in text_string_to_metric_families(read_metrics(url)):
        for sample in family.samples:
            if (
                family.name == "grpc_server_handled"
                and sample.name.endswith("_total")
                and sample.labels.get("grpc_method") == "Credit"
            ):
                total += sample.value
    return total


async def _credit_many(channel: grpc.aio.Channel) -> None:
    stub = wallet_pb2_grpc.WalletServiceStub(channel)
    account = await stub.OpenAccount(
        W.OpenAccountRequest(operation_ref=str(uuid.uuid4()), owner_id="rr", currency="USD"),
        timeout=10,
    )
    for _ in range(CALLS):
        await stub.Credit(
            W.CreditRequest(
                operation_ref=str(uuid.uuid4()),
                account_id=account.account_id,
                amount=money_pb2.Money(amount_minor=1, currency="USD"),
            ),
            timeout=10,
        )


@pytest.mark.parametrize("kind", ["create_channel", "bearer_channel"])
async def test_calls_on_one_channel_reach_every_wallet_replica(
    replicas: list[tuple[str, str]], kind: str
) -> None:
    target = replica_target([address for address, _ in replicas])
    assert target.startswith("ipv4:127.0.0.1:")
    before = [await asyncio.to_thread(_credits, url) for _, url in replicas]
    token = make_token()
    channel = (
        create_channel(target, token=lambda: token)
        if kind == "create_channel"
        else bearer_channel(target, token)
    )
    async with channel:
        await channel.channel_ready()
        await _credit_many(channel)
    after = [await asyncio.to_thread(_credits, url) for _, url in replicas]

    handled = [b - a for a, b in zip(before, after, strict=True)]
    assert sum(handled) == CALLS
    # Round robin over both once both are connected: neither is left idle, nor takes it all.
    assert all(n >= CALLS // 4 for n in handled), handled

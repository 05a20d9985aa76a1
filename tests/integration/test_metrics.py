"""One deposit through the suite as `paysuite up` runs it (a process each, every process with
its own /metrics port), then each process's /metrics shows what it did."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from bench import suite as bench_suite
from common.config import Settings
from common.grpc.auth import bearer_channel
from devstack import supervisor
from paysuite.payment.v1 import payment_pb2, payment_pb2_grpc
from paysuite.wallet.v1 import wallet_pb2_grpc
from tests.conftest import migrated_databases
from tests.integration.helpers import Clients, open_account, usd, wait_for_status
from tests.tokens import make_token

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

P = payment_pb2
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Processes:
    settings: Settings
    metrics: dict[str, str]  # process name -> its /metrics URL


@pytest_asyncio.fixture(loop_scope="session")
async def processes(migrated: Settings) -> AsyncIterator[Processes]:
    # Databases and streams of its own: the in-process suite of other tests consumes the
    # session's streams with the same group names and would take this test's events.
    run = uuid.uuid4().hex[:8]
    isolated = migrated.model_copy(
        update={"database_prefix": f"m{run}_", "stream_prefix": f"m{run}."}
    )
    folder = Path(tempfile.mkdtemp(prefix="paysuite-metrics-"))
    with migrated_databases(isolated, drop=True) as settings:
        settings = bench_suite.on_free_ports(settings, folder)
        plan = supervisor.plan(settings)
        env = bench_suite.child_env(
            settings, settings.require_database_url(), settings.require_redis_url()
        )
        env |= {
            "PAYSUITE_DATABASE_PREFIX": settings.database_prefix,
            "PAYSUITE_STREAM_PREFIX": settings.stream_prefix,
            "PAYSUITE_CONSUMER_BLOCK_MS": "200",
        }
        try:
            with supervisor.running(plan, env) as children:
                await asyncio.to_thread(supervisor.wait_ready, plan, children)
                yield Processes(settings, {p.name: p.metrics_url for p in plan if p.metrics_port})
        finally:
            shutil.rmtree(folder, ignore_errors=True)


async def scrape(url: str) -> Samples:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape_until(url: str, done: Callable[[Samples], bool], timeout_s: float = 10) -> Samples:
    """Counted right after a commit the test may already have observed: allow a moment."""
    deadline = time.monotonic() + timeout_s
    while True:
        samples = await scrape(url)
        if done(samples) or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.1)


PAYMENT_SERVICE = "paysuite.payment.v1.PaymentService"
WALLET_SERVICE = "paysuite.wallet.v1.WalletService"
GATEWAY_SERVICE = "paysuite.gateway.v1.GatewayService"


async def test_a_deposit_shows_on_every_process_metrics(processes: Processes) -> None:
    settings = processes.settings
    async with (
        bearer_channel(settings.wallet_target, make_token()) as wallet,
        bearer_channel(settings.payment_target, make_token()) as payments,
    ):
        c = Clients(
            wallet=wallet_pb2_grpc.WalletServiceStub(wallet),
            payments=payment_pb2_grpc.PaymentServiceStub(payments),
        )
        account_id = await open_account(c)
        created = await c.payments.CreateDeposit(
            P.CreateDepositRequest(
                idempotency_key=f"it-{uuid.uuid4()}", account_id=account_id, amount=usd(1250)
            )
        )
        await wait_for_status(c, created.payment_id, {P.PAYMENT_STATUS_COMPLETED})

    urls = processes.metrics
    by_method = {"kind": "deposit", "method": "pm_card_ok"}  # the default payment method
    payment = await scrape_until(
        urls["payment"], lambda s: get(s, "payment_success_total", **by_method) > 0
    )
    served = {"grpc_service": PAYMENT_SERVICE, "grpc_method": "CreateDeposit", "grpc_code": "OK"}
    assert get(payment, "grpc_server_handled_total", **served) == 1
    assert get(payment, "payment_attempts_total", **by_method) == 1
    assert get(payment, "payment_success_total", **by_method) == 1
    assert get(payment, "payment_amount_total", kind="deposit", currency="USD") == 12.5
    assert get(payment, "payment_latency_seconds_count", kind="deposit", status="completed") == 1
    # The deposit's credit reaches the wallet in a Credits batch (a deposit alone: a batch of one).
    called = {"grpc_service": WALLET_SERVICE, "grpc_method": "Credits", "grpc_code": "OK"}
    assert get(payment, "grpc_client_handled_total", **called) == 1

    wallet_samples = await scrape(urls["wallet"])
    assert get(wallet_samples, "grpc_server_handled_total", **called) == 1
    assert get(wallet_samples, "wallet_operations_total", kind="credit", result="ok") == 1
    # Opened and credited, in its history; published: none (PAYSUITE_WALLET_PUBLISHED_EVENTS).
    assert get(wallet_samples, "outbox_published_total") == 0

    gateway = await scrape(urls["gateway"])
    charge = {"provider": "sim-primary", "operation": "charge"}
    assert get(gateway, "gateway_provider_calls_total", **charge, outcome="ok") == 1
    assert get(gateway, "gateway_provider_call_seconds_count", **charge) == 1
    assert get(gateway, "gateway_circuit_breaker_state", provider="sim-primary") == 0
    # The saga's charges reach the gateway in Charges batches (a deposit alone: a batch of one).
    charged = {"grpc_service": GATEWAY_SERVICE, "grpc_method": "Charges", "grpc_code": "OK"}
    assert get(gateway, "grpc_server_handled_total", **charged) == 1

    # Every gRPC service times its event loop (common/looplag.py), ten samples a second.
    for samples in (payment, wallet_samples, gateway):
        assert get(samples, "event_loop_lag_seconds_count") > 0

    webhook = await scrape(urls["webhook adapter"])
    assert get(webhook, "webhook_receipts_total", provider="sim-primary", result="accepted") >= 1
    assert (
        get(webhook, "webhook_receipts_total", provider="sim-primary", result="rejected_signature")
        == 0
    )

"""One deposit through the suite as `paysuite up` runs it (a process each), with every
process's JSON logs captured and its spans exported to a collector the test plays: one trace
id runs through all of them, and no secret of the configuration appears in any log."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy.engine import make_url

from bench import suite as bench_suite
from common.config import Settings
from common.events import PAYMENT_STREAM
from common.grpc.auth import bearer_channel
from devstack import supervisor
from paysuite.events.v1 import events_pb2
from paysuite.payment.v1 import payment_pb2, payment_pb2_grpc
from paysuite.wallet.v1 import wallet_pb2_grpc
from tests import processes
from tests.conftest import migrated_databases
from tests.integration.helpers import Clients, open_account, usd, wait_for_status
from tests.tokens import make_token

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

P = payment_pb2


@dataclass
class Suite:
    settings: Settings
    logs: dict[str, Path]  # process name -> its captured stderr
    secrets: list[str]
    spans: list[tuple[str, str, str]]  # (service.name, trace id, span name), as exported


async def collector(spans: list[tuple[str, str, str]]) -> tuple[web.AppRunner, int]:
    """An OTLP/HTTP trace collector that keeps what every process exports."""

    async def export(request: web.Request) -> web.Response:
        batch = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in batch.resource_spans:
            service = next(
                (
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                ),
                "",
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append((service, span.trace_id.hex(), span.name))
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    app = web.Application()
    app.router.add_post("/v1/traces", export)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, runner.addresses[0][1]


@contextmanager
def running_with_logs(
    plan: list[supervisor.Process], env: dict[str, str], folder: Path
) -> Iterator[tuple[dict[str, subprocess.Popen[bytes]], dict[str, Path]]]:
    """supervisor.running, with each child's stderr (its log) kept in a file of its own."""
    children: dict[str, subprocess.Popen[bytes]] = {}
    logs = {proc.name: folder / f"{proc.name.replace(' ', '_')}.log" for proc in plan}
    with ExitStack() as files:
        try:
            for proc in plan:
                stderr = files.enter_context(logs[proc.name].open("wb"))
                children[proc.name] = subprocess.Popen(
                    [sys.executable, "-m", proc.module],
                    env={**env, **dict(proc.env)},
                    stderr=stderr,
                )
            yield children, logs
        finally:
            for child in children.values():
                if child.poll() is None:
                    child.terminate()
            for child in children.values():
                try:
                    child.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    child.kill()


def _with_password(url: str, password: str) -> str:
    # The embedded server trusts local connections: a password in the URL is accepted, and is
    # exactly the kind of secret a logged DSN would leak.
    return make_url(url).set(password=password).render_as_string(hide_password=False)


@pytest_asyncio.fixture(loop_scope="session")
async def suite(migrated: Settings) -> AsyncIterator[Suite]:
    run = uuid.uuid4().hex[:8]
    isolated = migrated.model_copy(
        update={"database_prefix": f"l{run}_", "stream_prefix": f"l{run}."}
    )
    webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    stripe_secret = "whsec_" + secrets.token_hex(16)
    db_password = "pw-" + secrets.token_hex(12)
    folder = Path(tempfile.mkdtemp(prefix="paysuite-logs-"))
    spans: list[tuple[str, str, str]] = []
    otlp, otlp_port = await collector(spans)
    with migrated_databases(isolated, drop=True) as settings:
        settings = bench_suite.on_free_ports(settings, folder).model_copy(
            update={
                "webhook_secret": SecretStr(webhook_secret),
                "provider_secondary_webhook_secret": SecretStr(stripe_secret),
            }
        )
        plan = supervisor.plan(settings)
        database_url = _with_password(settings.require_database_url(), db_password)
        env = bench_suite.child_env(settings, database_url, settings.require_redis_url())
        env |= {
            "PAYSUITE_DATABASE_PREFIX": settings.database_prefix,
            "PAYSUITE_STREAM_PREFIX": settings.stream_prefix,
            "PAYSUITE_CONSUMER_BLOCK_MS": "200",
            "PAYSUITE_LOG_FORMAT": "json",
            # DEBUG adds the access lines of every served call and request.
            "PAYSUITE_LOG_LEVEL": "DEBUG",
            "PAYSUITE_WEBHOOK_SECRET": webhook_secret,
            "PAYSUITE_PROVIDER_SECONDARY_WEBHOOK_SECRET": stripe_secret,
            "PAYSUITE_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        try:
            with running_with_logs(plan, env, folder) as (children, logs):
                await asyncio.to_thread(supervisor.wait_ready, plan, children)
                yield Suite(settings, logs, [webhook_secret, stripe_secret, db_password], spans)
        finally:
            await otlp.cleanup()
            shutil.rmtree(folder, ignore_errors=True)


def json_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue  # a library writing to stderr on its own (there should be none)
        if isinstance(value, dict):
            lines.append(value)
    return lines


async def completed_envelope(settings: Settings, payment_id: str) -> events_pb2.EventEnvelope:
    redis = Redis.from_url(settings.require_redis_url())
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for _id, fields in await redis.xrange(settings.stream_prefix + PAYMENT_STREAM):
                envelope = events_pb2.EventEnvelope.FromString(fields[b"envelope"])
                if envelope.aggregate_id == payment_id and envelope.event_type == (
                    "payment.completed"
                ):
                    return envelope
            await asyncio.sleep(0.1)
    finally:
        await redis.aclose()
    raise AssertionError("no payment.completed on the payment stream")


PROCESSES = ("payment", "gateway", "webhook adapter", "provider simulator (sim-primary)", "wallet")


async def test_one_deposit_is_one_trace_in_every_log_and_no_secret_is_logged(
    suite: Suite,
) -> None:
    settings = suite.settings
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
                idempotency_key=f"it-{uuid.uuid4()}", account_id=account_id, amount=usd(990)
            )
        )
        await wait_for_status(c, created.payment_id, {P.PAYMENT_STATUS_COMPLETED})
    completed = await completed_envelope(settings, created.payment_id)
    await asyncio.sleep(0.5)  # the last lines of the flow (the credit's access line) flush

    payment_logs = json_lines(suite.logs["payment"])
    initiated = [
        line
        for line in payment_logs
        if line.get("event") == "payment.initiated" and line.get("payment_id") == created.payment_id
    ]
    assert len(initiated) == 1
    trace_id = initiated[0]["trace_id"]
    assert len(trace_id) == 32
    # The trace went through the outbox, the gateway's events and the credit to the end.
    assert completed.traceparent.split("-")[1] == trace_id

    for name in PROCESSES:
        lines = [line for line in json_lines(suite.logs[name]) if line.get("trace_id") == trace_id]
        assert lines, f"{name} logged nothing in the deposit's trace"
        for line in lines:
            assert {"timestamp", "level", "service", "event"} <= line.keys(), line
    # The flow's ids are bound where they are known (the payment's consumers), and its
    # correlation id (the payment id) travels with the calls it makes (the credit).
    assert any(
        line.get("payment_id") == created.payment_id
        and line.get("correlation_id") == created.payment_id
        and line.get("trace_id") == trace_id
        and line.get("event") == "stream.handled"
        for line in payment_logs
    )
    assert any(
        line.get("correlation_id") == created.payment_id and line.get("trace_id") == trace_id
        for line in json_lines(suite.logs["wallet"])
    )

    # The exported spans of the trace: every process it crossed, each hop's span.
    await asyncio.sleep(0.5)
    deposit = sorted({(service, name) for service, tid, name in suite.spans if tid == trace_id})
    print("\n".join(f"{service}: {name}" for service, name in deposit))
    services = {service for service, _ in deposit}
    assert {
        "payment-service",
        "wallet-service",
        "gateway-service",
        "webhook-adapter",
        "provider-simulator",
    } <= services
    names = {name for _, name in deposit}
    assert {
        "paysuite.payment.v1.PaymentService/CreateDeposit",
        "paysuite.gateway.v1.GatewayService/Charge",
        "POST /v1/charges",
        "POST /webhooks/{provider}",
        "paysuite.gateway.v1.GatewayService/HandleProviderEvents",
        "charge.succeeded process",
        "paysuite.wallet.v1.WalletService/Credit",
        # The saga's trigger; payment.completed, which nobody acts on, is acknowledged unread.
        "payment.initiated process",
    } <= names
    assert "payment.completed process" not in names

    for name, path in suite.logs.items():
        text = path.read_text(errors="replace")
        for secret in suite.secrets:
            assert secret not in text, f"a configured secret is in the log of {name}"


@pytest.mark.parametrize("fmt", ["console", "json"])
async def test_a_hostile_payment_id_reaches_the_log_escaped(migrated: Settings, fmt: str) -> None:
    """A caller's id carrying a right-to-left override, a NUL and CR/LF, through a real
    payment service process: its access line names the id escaped, never the raw bytes."""
    started = await processes.start(
        "payment_service",
        b"service.started",
        PAYSUITE_DATABASE_URL=migrated.require_database_url(),
        PAYSUITE_REDIS_URL=migrated.require_redis_url(),
        PAYSUITE_DATABASE_PREFIX=migrated.database_prefix,
        PAYSUITE_STREAM_PREFIX=migrated.stream_prefix,
        PAYSUITE_PAYMENT_LISTEN="127.0.0.1:0",
        PAYSUITE_LOG_LEVEL="DEBUG",
        PAYSUITE_LOG_FORMAT=fmt,
    )
    hostile = "\u202eevil\x00\r\nforged"
    try:
        line = next(line for line in started.log.splitlines() if b"service.started" in line)
        port = re.search(rb"\bport\W+(\d+)", line)
        assert port is not None, line
        async with bearer_channel(f"127.0.0.1:{int(port[1])}", make_token()) as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await payment_pb2_grpc.PaymentServiceStub(channel).GetPayment(
                    P.GetPaymentRequest(payment_id=hostile)
                )
    finally:
        code, rest = await started.stop()
    log = started.log + rest
    assert code == 0, log.decode(errors="replace")
    served = [line for line in log.splitlines() if b"rpc.served" in line]
    assert served, log.decode(errors="replace")
    for raw in ("\u202e".encode(), b"\x00", b"\r"):
        assert raw not in log
    escaped = rb"\u202eevil\x00\r\nforged"
    if fmt == "json":
        assert json.loads(served[-1])["payment_id"] == escaped.decode()
    else:
        assert b"payment_id=" + escaped in served[-1]

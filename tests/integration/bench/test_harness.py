"""Every bench phase at toy sizes against the in-process suite: the harness keeps working as
the pipeline changes under it. The figures themselves mean nothing here."""

from __future__ import annotations

import math
from pathlib import Path

import psycopg
import pytest
from prometheus_client import generate_latest
from rich.console import Console
from sqlalchemy.engine import make_url

from bench import deposits
from bench.auth import bench_token
from bench.context import BenchContext, BenchOptions
from bench.cost import LOAD_CLIENT, Probe, per_payment
from bench.harness import SECTIONS, measure_all
from common import db
from gateway_service.bootstrap import DATABASE as GATEWAY_DB
from payment_service.bootstrap import DATABASE as PAYMENT_DB
from tests.conftest import InfraUrls, Suite
from wallet_service.bootstrap import DATABASE as WALLET_DB

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

TOY = BenchOptions(
    duration_s=0.8,
    complete_duration_s=1.5,
    open_duration_s=0.8,
    movement_duration_s=0.8,
    baseline_s=0.3,
    clients=4,
    accounts=4,
    pipeline_events=300,
    settle_timeout_s=30,
)


async def test_every_phase_measures_and_the_money_adds_up(suite: Suite) -> None:
    ctx = BenchContext(
        settings=suite.settings, options=TOY, run_id="itest", token=bench_token(suite.settings)
    )
    console = Console(record=True, width=160)

    problems = await measure_all(ctx, console, SECTIONS)

    assert problems == []
    for key in (
        "health_calls_per_s",
        "deposit_creates_per_s",
        "deposits_completed_per_s",
        "create_to_completed_p99_ms",
        "complete_deposits_per_s",
        "complete_create_to_completed_p99_ms",
        "complete_withdrawals_per_s",
        "open_create_p99_ms",
        "webhook_to_completed_p99_ms",
        "relay_events_per_s",
        "raw_xadd_per_s",
        "consumer_events_per_s",
        "raw_xread_per_s",
        "transfers_completed_per_s",
        "transfer_create_p99_ms",
        "withdrawals_completed_per_s",
        "withdrawal_create_p99_ms",
        "withdrawal_to_completed_p99_ms",
    ):
        assert ctx.figures[key] > 0, key
        assert not math.isnan(ctx.figures[key]), key
    assert ctx.figures["deposit_errors_closed"] == 0
    assert ctx.figures["transfer_errors"] == 0
    assert ctx.figures["withdrawal_errors"] == 0
    assert ctx.movements
    assert ctx.funded


def _metrics() -> str:
    return generate_latest().decode()


async def _server_log(dsn: str) -> Path | None:
    """pgserver's log file, when the tests run on the embedded server (not in CI's)."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute("SELECT current_setting('data_directory')")
        row = await cursor.fetchone()
    log = Path(str(row[0])) / "log" if row else None
    return log if log is not None and log.is_file() else None


async def test_the_complete_loop_meters_what_a_deposit_costs(
    suite: Suite, infra_urls: InfraUrls
) -> None:
    """The in-process suite: every service runs in this process (the load client), whose
    /metrics are this process's registry."""
    settings = suite.settings
    server = db.libpq_dsn(make_url(settings.require_database_url()))
    probe = Probe(
        processes={},
        metrics=[("in-process suite", _metrics)],
        database_dsn=server,
        databases={
            d.name: str(d.url(settings).database) for d in (PAYMENT_DB, GATEWAY_DB, WALLET_DB)
        },
        postgres_log=await _server_log(server),
    )
    ctx = BenchContext(
        settings=settings, options=TOY, run_id="icost", token=bench_token(settings), probe=probe
    )

    figures = await deposits.measure(ctx)

    assert figures["complete_deposits_per_s"] > 0
    assert figures["deposit_errors_complete"] == 0
    cost = per_payment(ctx.costs["deposit"])
    assert ctx.costs["deposit"].completed >= TOY.clients
    assert cost[f"cpu_ms.{LOAD_CLIENT}"] > 0
    assert cost["cpu_ms.total"] == 0  # nothing runs outside this process
    # Group commits share one transaction among the deposits that arrive together, so a
    # deposit's share of a database's transactions may well be under one: the meter is
    # checked to read each database, not for a count.
    assert cost["transactions.payments"] > 0
    assert cost["transactions.gateway"] > 0
    assert cost["grpc_calls_by_method.paysuite.payment.v1.PaymentService/CreateDeposit"] >= 0.5
    assert cost["http_requests.provider"] > 0
    assert cost["events_published.total"] >= 2
    # Two per deposit in steady state, but a toy window's edges move a share of one either
    # way (1.89 measured): the meter is checked to count consumed events.
    assert cost["events_consumed.total"] > 0
    assert cost["redis_commands.suite"] > 0
    if not infra_urls.external:  # the embedded server: its log file is on this machine
        assert probe.postgres_log is not None
        assert cost["statements.payments"] > 0
        assert cost["statements.BEGIN"] >= 1
        assert cost["statements.executes"] >= 1

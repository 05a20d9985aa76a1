"""Every bench phase at toy sizes against the in-process suite: the harness keeps working as
the pipeline changes under it. The figures themselves mean nothing here."""

from __future__ import annotations

import math

import pytest
from rich.console import Console

from bench.auth import bench_token
from bench.context import BenchContext, BenchOptions
from bench.harness import SECTIONS, measure_all
from tests.conftest import Suite

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

TOY = BenchOptions(
    duration_s=0.8,
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

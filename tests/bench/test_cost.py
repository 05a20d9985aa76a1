from __future__ import annotations

import asyncio
import math
import time

from rich.console import Console

from bench import cost_report
from bench.cost import (
    CPU_UNITS,
    LOAD_CLIENT,
    REFERENCE_UNITS,
    Cost,
    Meter,
    Snapshot,
    Usage,
    Windows,
    between,
    completed_between,
    metered_loop,
    per_payment,
)
from bench.counters import from_commandstats, from_metrics
from bench.pglog import Statements

METRICS = """\
# HELP grpc_server_handled_total RPCs completed by this server, by status code.
# TYPE grpc_server_handled_total counter
grpc_server_handled_total{grpc_code="OK",grpc_method="Create",grpc_service="p.P"} 30.0
grpc_server_handled_total{grpc_code="ALREADY_EXISTS",grpc_method="Create",grpc_service="p.P"} 2.0
grpc_server_handled_created{grpc_code="OK",grpc_method="Create",grpc_service="p.P"} 1.7e9
# HELP gateway_provider_calls_total Attempts.
# TYPE gateway_provider_calls_total counter
gateway_provider_calls_total{operation="charge",outcome="ok",provider="primary"} 10.0
gateway_provider_calls_total{operation="charge",outcome="circuit_open",provider="primary"} 4.0
# HELP outbox_published_total Outbox rows this process published to streams.
# TYPE outbox_published_total counter
outbox_published_total 21.0
# HELP outbox_claims_total Claims.
# TYPE outbox_claims_total counter
outbox_claims_total{outcome="published"} 6.0
outbox_claims_total{outcome="empty"} 2.0
# HELP stream_events_handled_total Stream entries.
# TYPE stream_events_handled_total counter
stream_events_handled_total{group="payment",result="ok",stream="gw.events"} 9.0
stream_events_handled_total{group="payment",result="retry",stream="gw.events"} 1.0
stream_events_handled_total{group="payment",result="skipped",stream="gw.events"} 3.0
# HELP outbox_backlog Not a counter.
# TYPE outbox_backlog gauge
outbox_backlog 5.0
"""


def test_counters_from_metrics() -> None:
    assert from_metrics("payment", METRICS) == {
        "grpc:p.P/Create": 32.0,
        "http:provider": 10.0,  # the breaker's refusals were never sent
        "published:payment": 21.0,
        "relay_claims:payment": 8.0,  # found rows or not, each a transaction
        "consumed:gw.events payment": 10.0,
        "skipped:gw.events payment": 3.0,  # acknowledged unread: not consumed
    }


def test_redis_calls_from_commandstats() -> None:
    info = {"cmdstat_xadd": {"calls": 7, "usec": 70}, "cmdstat_info": {"calls": 2}, "x": 1}
    assert from_commandstats(info) == {"xadd": 7, "info": 2}


def _snapshot(at: float, scale: int) -> Snapshot:
    return Snapshot(
        wall=at,
        clock=at,
        cpu_ticks={"payment": 100 * scale, "PostgreSQL": 50 * scale, LOAD_CLIENT: 10 * scale},
        transactions={"payments": (40 * scale, 10 * scale), "wallets": (20 * scale, 0)},
        counters={
            "grpc:p/CreateDeposit": 10.0 * scale,
            "grpc:w/Credit": 10.0 * scale,
            "http:provider": 10.0 * scale,
            "http:webhooks": 10.0 * scale,
            "published:payment": 30.0 * scale,
            "relay_claims:payment": 15.0 * scale,
            "consumed:s g": 20.0 * scale,
        },
        redis_calls={"xadd": 30 * scale, "xread": 5 * scale},
        client_redis_commands=4 * scale,
        reference=(20 * scale, 40_000_000 * scale),  # 2 ms a unit
    )


def test_usage_is_the_difference_of_two_snapshots() -> None:
    usage = between(_snapshot(10.0, 1), _snapshot(12.5, 2), ticks_per_s=100)
    assert usage.seconds == 2.5
    assert usage.cpu_ms == {"payment": 1000.0, "PostgreSQL": 500.0, LOAD_CLIENT: 100.0}
    assert usage.commits == {"payments": 40, "wallets": 20}
    assert usage.rollbacks == {"payments": 10, "wallets": 0}
    assert usage.redis_calls == {"xadd": 30, "xread": 5}
    assert usage.client_redis_commands == 4 + 1  # and the first snapshot's INFO


def _cost(completed: int = 10) -> Cost:
    usage = between(_snapshot(0.0, 1), _snapshot(1.0, 2), ticks_per_s=100)
    payments = Statements(simple=40, parses=5, binds=30, executes=30, errors=2)
    payments.kinds.update({"BEGIN": 20, "COMMIT": 15, "ROLLBACK": 5, "SELECT": 30, "(failed)": 2})
    logged = Usage(1.0, {"PostgreSQL": 120.0}, {"payments": 24}, {"payments": 4}, {}, {}, 0)
    return Cost(
        "deposit",
        completed,
        usage,
        statements={"payments": payments, "wallets": Statements()},
        statement_completed=4,
        logged=logged,
    )


def test_per_payment_divides_by_the_payments_completed_in_each_window() -> None:
    figures = per_payment(_cost())

    assert figures["cpu_ms.payment"] == 100.0
    assert figures["cpu_ms.PostgreSQL"] == 50.0
    assert figures["cpu_ms.total"] == 150.0  # the load client is not in the total
    assert figures[f"cpu_ms.{LOAD_CLIENT}"] == 10.0
    assert figures[f"{CPU_UNITS}.total"] == 15.0  # 150 ms beside the load client's 10
    assert figures[f"{REFERENCE_UNITS}.unit_ms"] == 2.0
    assert figures[f"{REFERENCE_UNITS}.total"] == 75.0  # 150 ms in units of 2 ms
    assert figures["transactions.payments"] == 5.0
    assert figures["transactions.wallets"] == 2.0
    assert figures["transactions.total"] == 7.0
    assert figures["rollbacks.total"] == 1.0
    # Statements over the 4 payments of the statement window.
    assert figures["statements.payments"] == (40 + 30 + 2) / 4
    assert figures["statements.wallets"] == 0.0
    assert figures["statements.total"] == 18.0
    assert figures["statements.BEGIN"] == 5.0
    assert figures["statements.DEALLOCATE"] == 0.0
    assert figures["statements.parses"] == 1.25
    assert figures["cpu_ms.PostgreSQL, statements logged"] == 30.0
    assert figures["transactions.total, statement window"] == 7.0
    assert figures["grpc_calls.total"] == 2.0
    assert figures["grpc_calls_by_method.w/Credit"] == 1.0
    assert figures["http_requests.total"] == 2.0
    assert figures["events_published.total"] == 3.0
    assert figures["relay_claims.total"] == 1.5
    assert figures["events_consumed.total"] == 2.0
    assert figures["redis_commands.suite"] == (35 - 5) / 10
    assert figures[f"redis_commands.{LOAD_CLIENT}"] == 0.5


def test_nothing_completed_is_nan_not_a_division_by_zero() -> None:
    figures = per_payment(_cost(completed=0))
    assert math.isnan(figures["cpu_ms.total"])
    assert math.isnan(figures[f"{CPU_UNITS}.total"])


def test_the_cost_table_has_a_column_per_kind_and_the_deposit_budgets() -> None:
    console = Console(record=True, width=200)
    console.print(cost_report.render({"deposit": _cost(), "transfer": _cost(5)}, title="t"))
    text = console.export_text()
    assert "CPU ms: total (every process but the load client)" in text
    assert "CPU in load-client units: total ÷ load client" in text
    assert "SQL statements: BEGIN (all databases)" in text
    assert "≤ 12" in text
    assert "FAIL" in text  # 150 ms per deposit
    assert "w/Credit" not in text  # details are in the JSON only


def test_windows_split_a_duration() -> None:
    assert Windows.within(20.0) == Windows(2.0, 12.0, 6.0)
    assert Windows.within(5.0) == Windows(0.5, 3.0, 1.5)


async def test_a_metered_loop_without_a_probe_still_times_its_cost_window() -> None:
    done: dict[str, float] = {}

    async def pay(i: int) -> int:
        await asyncio.sleep(0.01)
        done[str(i)] = time.perf_counter()
        return i

    meter = Meter(None, None, completed_between(done))  # type: ignore[arg-type]  # this test reads no process or database, so no readers
    metered = await metered_loop(
        pay, kind="deposit", clients=2, windows=Windows(0.05, 0.2, 0.0), meter=meter
    )
    assert metered.cost is None
    assert 0.19 < metered.seconds < 0.3
    assert 20 < metered.completed < 45
    assert len(metered.samples) >= metered.completed


async def test_windows_stretch_until_each_holds_twice_as_many_payments_as_clients() -> None:
    done: dict[str, float] = {}

    async def slow(i: int) -> int:
        await asyncio.sleep(0.15)
        done[str(i)] = time.perf_counter()
        return i

    meter = Meter(None, None, completed_between(done))  # type: ignore[arg-type]  # this test reads no process or database, so no readers
    metered = await metered_loop(
        slow, kind="withdrawal", clients=3, windows=Windows(0.0, 0.01, 0.0), meter=meter
    )
    assert metered.completed >= 6  # twice the clients
    assert metered.seconds >= 0.25
    assert meter.notes == []

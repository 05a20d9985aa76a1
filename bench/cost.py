"""What a completed payment costs: CPU per process, PostgreSQL transactions and statements,
gRPC calls, HTTP requests, events and Redis commands, each divided by the payments completed in
the same window of steady load.

A metered loop is a closed loop whose clients each wait for their payment to finish before the
next, in three windows: a warm-up (not counted), the cost window (everything but statements is
read at its start and end, with nothing extra switched on), then the statement window (every
statement logged, bench/pglog.py; its CPU is kept apart, which says what the logging costs).
With the clients each holding one payment, as many are in flight at the end of a window as at
its start, so what was spent in it over what completed in it is the cost of one payment.

Sources: /proc (bench/proc.py) for CPU, `pg_stat_database` for transactions, each process's
/metrics and `INFO commandstats` (bench/counters.py) for calls, events and Redis commands. The
load client (this process) is reported on its own and left out of the totals, as are its own
Redis commands (the completion watcher's XREADs and the bench's INFO).
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import psycopg
from redis.asyncio import Redis

from bench import counters, pglog, proc
from bench.load import Sample, closed_loop

T = TypeVar("T")

LOAD_CLIENT = "load client"
CPU_UNITS = "cpu_load_client_units"
REFERENCE_UNITS = "cpu_reference_units"
POSTGRES = "PostgreSQL"
REDIS = "Redis"
# Long enough for every backend to have read the reloaded configuration (each does before its
# next command; the postmaster signals them at once); the statement window's warm-up also
# waits for the clients to go round once.
RELOAD_SETTLE_S = 0.25
# How much longer than planned a window may run to see enough payments complete.
WINDOW_STRETCH_S = 60.0
# A metered loop stops when its windows are done; this only bounds a meter that hangs.
LOAD_GRACE_S = 3 * WINDOW_STRETCH_S + 30.0

_XACTS = "SELECT datname, xact_commit, xact_rollback FROM pg_stat_database WHERE datname = ANY(%s)"


@dataclass(frozen=True, slots=True)
class Probe:
    """Where the cost of the suite under test can be read."""

    # name -> pids, each counted with its descendants and summed: a service's replicas
    # ("wallet", "wallet 2") are counted as one.
    processes: Mapping[str, Sequence[int]]
    # (process name, reader of one replica's /metrics text): replicas share their service's
    # name, so their counters add up under it.
    metrics: Sequence[tuple[str, Callable[[], str]]]
    database_dsn: str  # any database on the server (pg_stat_database covers them all)
    databases: Mapping[str, str]  # label ("payments") -> the database's name on the server
    postgres_log: Path | None  # the server's log file: None, statements are not counted
    load_client_pid: int = field(default_factory=os.getpid)
    # (units, their CPU ns) of the reference work so far (bench/reference.py), if it runs.
    reference: Callable[[], tuple[int, int]] | None = None
    proc_dir: Path = proc.PROC


@dataclass(frozen=True, slots=True)
class Snapshot:
    wall: float  # time.time(), the clock the server's log uses
    clock: float  # time.perf_counter(), the clock the completions are timed with
    cpu_ticks: dict[str, int] = field(default_factory=dict)
    transactions: dict[str, tuple[int, int]] = field(default_factory=dict)  # commits, rollbacks
    counters: dict[str, float] = field(default_factory=dict)
    redis_calls: dict[str, int] = field(default_factory=dict)
    client_redis_commands: int = 0  # the load client's own, so far
    reference: tuple[int, int] = (0, 0)  # reference units done, their CPU ns, so far


async def snapshot(probe: Probe, redis: Redis, client_redis_commands: int) -> Snapshot:
    wall, clock = time.time(), time.perf_counter()
    ticks = await asyncio.to_thread(
        proc.cpu_ticks, probe.processes, [(LOAD_CLIENT, probe.load_client_pid)], probe.proc_dir
    )
    found: dict[str, float] = {}
    for name, read in probe.metrics:
        for key, value in counters.from_metrics(name, await asyncio.to_thread(read)).items():
            found[key] = found.get(key, 0.0) + value
    async with await psycopg.AsyncConnection.connect(probe.database_dsn) as conn:
        cursor = await conn.execute(_XACTS, (list(probe.databases.values()),))
        by_name = {str(name): (int(c), int(r)) for name, c, r in await cursor.fetchall()}
    info = await redis.info("commandstats")
    return Snapshot(
        wall=wall,
        clock=clock,
        cpu_ticks=ticks,
        transactions={label: by_name.get(name, (0, 0)) for label, name in probe.databases.items()},
        counters=found,
        redis_calls=counters.from_commandstats(info),
        client_redis_commands=client_redis_commands,
        reference=probe.reference() if probe.reference is not None else (0, 0),
    )


@dataclass(frozen=True, slots=True)
class Usage:
    """What was spent between two snapshots."""

    seconds: float
    cpu_ms: dict[str, float]  # by process, the load client included
    commits: dict[str, int]  # by database label
    rollbacks: dict[str, int]
    counters: dict[str, float]
    redis_calls: dict[str, int]  # by command, the load client's included
    client_redis_commands: int
    reference_ms: float = math.nan  # CPU ms of one reference unit in the window (NaN: none)


def between(a: Snapshot, b: Snapshot, *, ticks_per_s: int) -> Usage:
    return Usage(
        seconds=b.wall - a.wall,
        cpu_ms={
            name: (ticks - a.cpu_ticks.get(name, 0)) * 1000 / ticks_per_s
            for name, ticks in b.cpu_ticks.items()
        },
        commits={
            k: b.transactions[k][0] - a.transactions.get(k, (0, 0))[0] for k in b.transactions
        },
        rollbacks={
            k: b.transactions[k][1] - a.transactions.get(k, (0, 0))[1] for k in b.transactions
        },
        counters=counters.minus(b.counters, a.counters),
        redis_calls={k: v - a.redis_calls.get(k, 0) for k, v in b.redis_calls.items()},
        # The earlier snapshot's INFO is counted by the later one (a command is counted once
        # it has run), and is the bench's.
        client_redis_commands=b.client_redis_commands - a.client_redis_commands + 1,
        reference_ms=_reference_ms(a.reference, b.reference),
    )


def _reference_ms(a: tuple[int, int], b: tuple[int, int]) -> float:
    units = b[0] - a[0]
    return (b[1] - a[1]) / units / 1e6 if units > 0 else math.nan


@dataclass(frozen=True, slots=True)
class Cost:
    """One kind of payment's metered loop: what its windows spent and completed."""

    kind: str  # "deposit", "transfer", "withdrawal"
    completed: int  # payments completed in the cost window
    usage: Usage
    # By database label; None when statements could not be counted (see the notes).
    statements: Mapping[str, pglog.Statements] | None = None
    statement_completed: int = 0  # payments completed in the statement window
    logged: Usage | None = None  # the statement window's usage


STATEMENT_KINDS = ("BEGIN", "COMMIT", "ROLLBACK", "DEALLOCATE")


def per_payment(cost: Cost) -> dict[str, float]:
    """Every figure divided by the payments completed in its window (NaN if none did), keyed
    `group.detail`: cpu_ms.payment, transactions.total, statements.BEGIN, grpc_calls.total."""
    n, usage = cost.completed, cost.usage

    def each(value: float) -> float:
        return value / n if n else math.nan

    figures: dict[str, float] = {}
    suite_cpu = {k: v for k, v in usage.cpu_ms.items() if k != LOAD_CLIENT}
    for name, ms in suite_cpu.items():
        figures[f"cpu_ms.{name}"] = each(ms)
    suite_ms = sum(suite_cpu.values())
    figures["cpu_ms.total"] = each(suite_ms)
    client_ms = usage.cpu_ms.get(LOAD_CLIENT, math.nan)
    figures[f"cpu_ms.{LOAD_CLIENT}"] = each(client_ms)
    # The suite's CPU in units of the load client's: the client does the same work for every
    # payment (its create call and the read of its completion), so its CPU per payment moves
    # only with how fast the machine runs at the moment. On the shared 2-core machine the
    # suite's CPU per deposit ranged 10.2-16.8 ms over six runs of unchanged code, and this
    # ratio 15.1-16.4: the figure to compare runs by. Not between versions of the bench's
    # client, whose own work it is divided by, nor across a change to when events reach the
    # stream the client reads its completions from (its reads then batch differently).
    figures[f"{CPU_UNITS}.total"] = suite_ms / client_ms if n and client_ms > 0 else math.nan
    # The same, in units of a fixed piece of Python work timed beside the suite
    # (bench/reference.py), which no change to the suite moves.
    figures[f"{REFERENCE_UNITS}.total"] = each(suite_ms) / usage.reference_ms
    figures[f"{REFERENCE_UNITS}.unit_ms"] = usage.reference_ms
    for label in usage.commits:
        figures[f"transactions.{label}"] = each(usage.commits[label] + usage.rollbacks[label])
    figures["transactions.total"] = each(
        sum(usage.commits.values()) + sum(usage.rollbacks.values())
    )
    figures["rollbacks.total"] = each(sum(usage.rollbacks.values()))
    figures.update(_statements_per_payment(cost))
    grpc = counters.group(usage.counters, "grpc")
    figures["grpc_calls.total"] = each(sum(grpc.values()))
    http = counters.group(usage.counters, "http")
    for what in ("provider", "webhooks"):
        figures[f"http_requests.{what}"] = each(http.get(what, 0.0))
    figures["http_requests.total"] = each(sum(http.values()))
    published = counters.group(usage.counters, "published")
    figures["events_published.total"] = each(sum(published.values()))
    figures["relay_claims.total"] = each(
        sum(counters.group(usage.counters, "relay_claims").values())
    )
    consumed = counters.group(usage.counters, "consumed")
    figures["events_consumed.total"] = each(sum(consumed.values()))
    skipped = counters.group(usage.counters, "skipped")
    figures["events_skipped.total"] = each(sum(skipped.values()))
    all_redis = sum(usage.redis_calls.values())
    figures["redis_commands.suite"] = each(all_redis - usage.client_redis_commands)
    figures[f"redis_commands.{LOAD_CLIENT}"] = each(usage.client_redis_commands)
    if cost.logged is not None and cost.statement_completed:
        # The statement window's own figures, to judge it by: its transactions beside the
        # cost window's, and PostgreSQL's CPU with every statement logged beside without.
        logged, m = cost.logged, cost.statement_completed
        xacts = sum(logged.commits.values()) + sum(logged.rollbacks.values())
        figures["transactions.total, statement window"] = xacts / m
        if POSTGRES in logged.cpu_ms:
            figures["cpu_ms.PostgreSQL, statements logged"] = logged.cpu_ms[POSTGRES] / m
    for prefix, values in (
        ("grpc_calls_by_method", grpc),
        ("events_published_by_process", published),
        ("events_consumed_by_group", consumed),
        ("events_skipped_by_group", skipped),
        ("redis_commands_by_command", {k: float(v) for k, v in usage.redis_calls.items()}),
    ):
        for detail, value in sorted(values.items()):
            figures[f"{prefix}.{detail}"] = each(value)
    return figures


def _statements_per_payment(cost: Cost) -> dict[str, float]:
    if cost.statements is None:
        return {}
    n = cost.statement_completed

    def each(value: float) -> float:
        return value / n if n else math.nan

    found = cost.statements.values()
    figures = {f"statements.{label}": each(s.statements) for label, s in cost.statements.items()}
    figures["statements.total"] = each(sum(s.statements for s in found))
    for kind in STATEMENT_KINDS:
        figures[f"statements.{kind}"] = each(sum(s.kinds[kind] for s in found))
    figures["statements.parses"] = each(sum(s.parses for s in found))
    figures["statements.executes"] = each(sum(s.executes for s in found))
    figures["statements.simple"] = each(sum(s.simple for s in found))
    figures["statements.failed"] = each(sum(s.errors for s in found))
    return figures


def statement_kinds(cost: Cost) -> dict[str, dict[str, float]]:
    """Per database, executed statements by kind per payment (for the JSON)."""
    if cost.statements is None or not cost.statement_completed:
        return {}
    n = cost.statement_completed
    return {
        label: {kind: count / n for kind, count in s.kinds.most_common()}
        for label, s in cost.statements.items()
    }


def document(cost: Cost) -> dict[str, object]:
    return {
        "completed_in_cost_window": cost.completed,
        "cost_window_s": cost.usage.seconds,
        "completed_in_statement_window": cost.statement_completed,
        "statement_window_s": cost.logged.seconds if cost.logged else None,
        "per_payment": per_payment(cost),
        "statement_kinds_per_payment": statement_kinds(cost),
        "cost_window_totals": _totals(cost.usage),
        "statement_window_totals": _totals(cost.logged) if cost.logged else None,
    }


def _totals(usage: Usage) -> dict[str, object]:
    return {
        "cpu_ms": usage.cpu_ms,
        "commits": usage.commits,
        "rollbacks": usage.rollbacks,
        "counters": usage.counters,
        "redis_calls": usage.redis_calls,
        "load_client_redis_commands": usage.client_redis_commands,
    }


# --- the metered loop --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Windows:
    warmup_s: float
    cost_s: float
    statements_s: float

    @classmethod
    def within(cls, duration_s: float) -> Windows:
        """A tenth (at most 2 s) to warm up, three tenths with statements logged, the rest
        for the cost window."""
        warmup = min(2.0, duration_s / 10)
        statements = duration_s * 0.3
        return cls(warmup, duration_s - warmup - statements, statements)


@dataclass(frozen=True, slots=True)
class Metered(Generic[T]):
    samples: list[Sample[T]]
    completed: int  # in the cost window
    seconds: float  # the cost window's length
    cost: Cost | None  # None without a probe

    @property
    def completed_per_s(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else math.nan


@dataclass(frozen=True, slots=True)
class Meter:
    """What a metered loop reads: the probe, a Redis client for INFO, how many Redis commands
    the load client has sent so far, and how many payments completed between two instants
    (perf_counter)."""

    probe: Probe | None
    redis: Redis
    completed_between: Callable[[float, float], int]
    client_redis_commands: Callable[[], int] = lambda: 0
    notes: list[str] = field(default_factory=list)


async def metered_loop(
    call: Callable[[int], Awaitable[T]],
    *,
    kind: str,
    clients: int,
    windows: Windows,
    meter: Meter,
) -> Metered[T]:
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        load = group.create_task(
            closed_loop(call, clients=clients, duration_s=_total(windows) + LOAD_GRACE_S, stop=stop)
        )
        measured = group.create_task(_measure(kind, windows, meter, stop, clients))
    completed, seconds, cost = measured.result()
    return Metered(load.result(), completed, seconds, cost)


def _total(windows: Windows) -> float:
    return windows.warmup_s + windows.cost_s + windows.statements_s


async def _measure(
    kind: str, windows: Windows, meter: Meter, stop: asyncio.Event, clients: int
) -> tuple[int, float, Cost | None]:
    """Each window lasts its time and until enough payments completed in it: the warm-up
    until as many as there are clients (each has been round its loop about once: steady
    state), the others twice as many, so a slow kind is not divided by a handful."""
    enough = 2 * clients
    try:
        await _window(meter, time.perf_counter(), windows.warmup_s, clients, f"{kind} warm-up")
        probe = meter.probe
        if probe is None:
            start = time.perf_counter()
            await _window(meter, start, windows.cost_s, enough, f"{kind} cost window")
            end = time.perf_counter()
            return meter.completed_between(start, end), end - start, None
        a = await _snapshot(probe, meter)
        await _window(meter, a.clock, windows.cost_s, enough, f"{kind} cost window")
        b = await _snapshot(probe, meter)
        completed = meter.completed_between(a.clock, b.clock)
        cost = Cost(kind, completed, between(a, b, ticks_per_s=proc.ticks_per_second()))
        if probe.postgres_log is not None and windows.statements_s > 0:
            cost = await _statement_window(cost, probe, windows, meter, enough)
        return completed, b.clock - a.clock, cost
    finally:
        stop.set()


async def _window(meter: Meter, start: float, seconds: float, completed: int, name: str) -> None:
    await asyncio.sleep(seconds)
    deadline = start + seconds + WINDOW_STRETCH_S
    while meter.completed_between(start, time.perf_counter()) < completed:
        if time.perf_counter() > deadline:
            meter.notes.append(f"{name}: fewer than {completed} payments completed in it")
            return
        await asyncio.sleep(0.05)


async def _snapshot(probe: Probe, meter: Meter) -> Snapshot:
    return await snapshot(probe, meter.redis, meter.client_redis_commands())


async def _statement_window(
    cost: Cost, probe: Probe, windows: Windows, meter: Meter, enough: int
) -> Cost:
    log = probe.postgres_log
    assert log is not None
    try:
        offset = log.stat().st_size
        async with await psycopg.AsyncConnection.connect(
            probe.database_dsn, autocommit=True
        ) as conn:
            await pglog.set_logging(conn, on=True)
            try:
                # Logging slows PostgreSQL, which moves where the payments in flight wait:
                # the clients go round once more before the window opens (steady state again).
                name = f"{cost.kind} statement warm-up"
                await _window(meter, time.perf_counter(), RELOAD_SETTLE_S, enough // 2, name)
                c = await _snapshot(probe, meter)
                name = f"{cost.kind} statement window"
                await _window(meter, c.clock, windows.statements_s, enough, name)
                d = await _snapshot(probe, meter)
            finally:
                await pglog.set_logging(conn, on=False)
        lines = await asyncio.to_thread(_lines_from, log, offset)
    except (OSError, psycopg.Error) as exc:
        meter.notes.append(f"{cost.kind} cost: statements not counted ({exc!r:.200})")
        return cost
    by_name = pglog.count(lines, start=c.wall, end=d.wall, databases=probe.databases.values())
    return Cost(
        cost.kind,
        cost.completed,
        cost.usage,
        statements={label: by_name[name] for label, name in probe.databases.items()},
        statement_completed=meter.completed_between(c.clock, d.clock),
        logged=between(c, d, ticks_per_s=proc.ticks_per_second()),
    )


def _lines_from(path: Path, offset: int) -> list[str]:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read().decode(errors="replace").splitlines()


class Finishes:
    """Instants (perf_counter) at which payments completed, for `Meter.completed_between`."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, start: float, end: float) -> int:
        return sum(1 for t in self.times if start <= t <= end)


def completed_between(instants: Mapping[str, float]) -> Callable[[float, float], int]:
    """For a completion watcher's {payment_id: instant}."""

    def count(start: float, end: float) -> int:
        return sum(1 for t in list(instants.values()) if start <= t <= end)

    return count

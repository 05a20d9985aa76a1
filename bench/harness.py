"""One bench run: start (or find) the suite, measure every section, check the money, report."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from rich.console import Console
from sqlalchemy.engine import make_url

from bench import (
    charts,
    cost,
    cost_report,
    databases,
    deposits,
    movements,
    pipeline,
    reference,
    report,
    wallet_bench,
    webhook_bench,
)
from bench.auth import bench_token
from bench.checks import money_problems, movement_problems, not_terminal
from bench.context import BenchContext, BenchOptions
from bench.counters import read_metrics
from bench.suite import RunningSuite, SuiteFailed, fresh_suite, running_suite
from common import db
from common.config import Settings
from common.grpc.auth import bearer_channel
from gateway_service.bootstrap import DATABASE as GATEWAY_DB
from payment_service.bootstrap import DATABASE as PAYMENT_DB
from paysuite.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from wallet_service.bootstrap import DATABASE as WALLET_DB

Measure = Callable[[BenchContext], Awaitable[dict[str, float]]]


@dataclass(frozen=True, slots=True)
class Section:
    name: str
    measure: Measure


async def _wallet(ctx: BenchContext) -> dict[str, float]:
    """Postings straight to the wallet, on accounts of its own (outside the money check);
    with one wallet in a suite the bench started, again with a second replica started for
    the phase alone (the `_2_replicas` figures), so every run shows what a replica adds."""
    figures = {
        "wallet_replicas": float(ctx.wallet_replicas),
        **await _postings(ctx, ctx.settings.wallet_target),
    }
    if ctx.more_wallets is not None and ctx.wallet_replicas == 1:
        with ctx.more_wallets(1) as target:
            both = await _postings(ctx, target)
        figures.update(
            {f"{key}{TWO_REPLICAS}": both[key] for key in wallet_bench.COMPARED if key in both}
        )
    return figures


TWO_REPLICAS = "_2_replicas"


async def _postings(ctx: BenchContext, target: str) -> dict[str, float]:
    return await wallet_bench.measure(
        target,
        ctx.token,
        duration_s=max(ctx.options.open_duration_s, 4.0),
        concurrency=ctx.options.clients,
    )


# In this order: the trivial call first, while the suite is idle; the pipeline sections last,
# on scratch state, once the deposits have settled.
SECTIONS: tuple[Section, ...] = (
    Section("baseline: trivial gRPC call", deposits.measure_baseline),
    Section("deposits: complete, closed, then open loop", deposits.measure),
    Section("transfers, closed loop; withdrawals, closed then complete loop", movements.measure),
    Section("wallet postings", _wallet),
    Section("outbox relay and stream consumer", pipeline.measure),
    Section("webhooks through the adapter into the gateway", webhook_bench.measure_in_bench),
)


@dataclass(frozen=True, slots=True)
class Outcome:
    figures: dict[str, float]
    problems: list[str]
    json_path: Path
    png_path: Path

    @property
    def ok(self) -> bool:
        return not self.problems


def run(
    settings: Settings,
    options: BenchOptions,
    console: Console,
    *,
    target_running: bool = False,
    sections: Iterable[Section] = SECTIONS,
) -> Outcome:
    """Raises SuiteFailed when the suite cannot start or dies under the load."""
    started_at = datetime.now(UTC)
    if not target_running:
        console.print("starting a fresh suite on the embedded servers ...")
    suite_cm = running_suite(settings) if target_running else fresh_suite(settings)
    with (
        suite_cm as suite,
        tempfile.TemporaryDirectory(prefix="paysuite-reference-") as scratch,
        reference.running(Path(scratch)) as reference_read,
    ):
        ctx = BenchContext(
            settings=suite.settings,
            options=options,
            run_id=_run_id(),
            token=bench_token(suite.settings),
            probe=dataclasses.replace(probe_of(suite), reference=reference_read),
            wallet_replicas=suite.wallet_replicas or 1,
            more_wallets=suite.more_wallets if suite.can_add_wallets() else None,
        )
        if target_running:
            ctx.notes.append(
                "a running suite: cost counts transactions and Redis commands only (CPU,"
                " statements and calls need the processes the bench starts)"
            )
        try:
            problems = asyncio.run(measure_all(ctx, console, sections))
        except grpc.RpcError as exc:
            suite.check_alive()  # a dead process is the better explanation
            raise SuiteFailed(f"a call to the suite failed: {exc}") from None
        suite.check_alive()
    return publish(ctx, problems, console, started_at=started_at, mode=_mode(target_running))


async def measure_all(
    ctx: BenchContext, console: Console, sections: Iterable[Section]
) -> list[str]:
    """Every section's figures into ctx.figures; returns what is wrong with the money."""
    for section in sections:
        console.print(f"measuring {section.name} ...")
        began = time.perf_counter()
        ctx.figures.update(await section.measure(ctx))
        console.print(f"  done in {time.perf_counter() - began:.1f} s")
    if ctx.probe is not None:
        ctx.figures["postgres_deadlocks"] = float(
            await databases.deadlocks(ctx.probe.database_dsn, list(ctx.probe.databases.values()))
        )
    console.print("checking every payment and balance ...")
    return await check_money(ctx)


async def check_money(ctx: BenchContext) -> list[str]:
    problems = await _check_deposits(ctx) if ctx.accounts else []
    if ctx.funded:
        problems += await _check_movements(ctx)
    return problems


async def _check_deposits(ctx: BenchContext) -> list[str]:
    dsn = databases.dsn(ctx.settings, PAYMENT_DB)
    deadline = time.perf_counter() + ctx.options.settle_timeout_s
    stored = await databases.stored_payments(dsn, ctx.accounts)
    # Deposits whose call failed on the client side were not watched: give them time too.
    while not_terminal(stored) and time.perf_counter() < deadline:
        await asyncio.sleep(0.5)
        stored = await databases.stored_payments(dsn, ctx.accounts)
    problems = money_problems(ctx.deposits.values(), stored, await _balances(ctx, ctx.accounts))
    if not any(p.status == "completed" for p in stored):
        problems.append("no deposit completed: the bench measured nothing")
    return problems


async def _check_movements(ctx: BenchContext) -> list[str]:
    dsn = databases.dsn(ctx.settings, PAYMENT_DB)
    accounts = list(ctx.funded)
    deadline = time.perf_counter() + ctx.options.settle_timeout_s
    stored = await databases.stored_movements(dsn, accounts)
    while not_terminal(stored) and time.perf_counter() < deadline:
        await asyncio.sleep(0.5)
        stored = await databases.stored_movements(dsn, accounts)
    balances = await _balances(ctx, accounts)
    problems = movement_problems(ctx.movements.values(), stored, ctx.funded, balances)
    for kind in (movements.TRANSFER, movements.WITHDRAWAL):
        if not any(p.kind == kind and p.status == "completed" for p in stored):
            problems.append(f"no {kind} completed: the bench measured nothing")
    return problems


async def _balances(ctx: BenchContext, accounts: Iterable[str]) -> dict[str, int]:
    async with bearer_channel(ctx.settings.wallet_target, ctx.token) as channel:
        wallet = wallet_pb2_grpc.WalletServiceStub(channel)
        balances = {}
        for account_id in accounts:
            balance = await wallet.GetBalance(
                wallet_pb2.GetBalanceRequest(account_id=account_id), timeout=30
            )
            balances[account_id] = balance.total.amount_minor
        return balances


def probe_of(suite: RunningSuite) -> cost.Probe:
    """Where the suite's cost is read: every process the bench started, the embedded
    PostgreSQL (postmaster and backends) and Redis, their /metrics and the server's log."""
    settings = suite.settings
    processes: dict[str, list[int]] = {}
    # A service's replicas ("wallet", "wallet 2") under the service's name, summed.
    service_of = {proc.name: proc.service_name for proc in suite.processes}
    for name, child in suite.children.items():
        processes.setdefault(service_of.get(name, name), []).append(child.pid)
    log = None
    if suite.servers is not None:
        postgres = suite.servers.postgres_pids()  # the postmaster first
        if postgres:
            processes[cost.POSTGRES] = [postgres[0]]
        processes[cost.REDIS] = [suite.servers.redis_pid()]
        log = suite.servers.postgres_log
    return cost.Probe(
        processes=processes,
        metrics=[
            (proc.service_name, functools.partial(read_metrics, proc.metrics_url))
            for proc in suite.processes
            if proc.metrics_url
        ],
        # The server's own database: reading the statistics there adds no transaction to a
        # service's database.
        database_dsn=db.libpq_dsn(make_url(settings.require_database_url())),
        databases={
            database.name: str(database.url(settings).database)
            for database in (PAYMENT_DB, GATEWAY_DB, WALLET_DB)
        },
        postgres_log=log,
    )


def _run_id() -> str:
    return uuid.uuid4().hex[:8]


def publish(
    ctx: BenchContext, problems: list[str], console: Console, *, started_at: datetime, mode: str
) -> Outcome:
    """The table on the console, the figures as JSON and the chart as PNG, side by side."""
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    title = f"paysuite bench {stamp} ({os.cpu_count()} CPUs, {mode})"
    if ctx.costs:
        console.print(cost_report.render(ctx.costs, title=f"{title}: cost per completed payment"))
    rows = report.rows(ctx.figures)
    console.print(report.render(rows, title=title))
    for note in ctx.notes:
        console.print(f"[yellow]note: {note}[/yellow]")
    for problem in problems:
        console.print(f"[red]MONEY CHECK FAILED: {problem}[/red]")
    if not problems:
        console.print(
            f"[green]money check: {len(ctx.deposits)} deposits, {len(ctx.movements)} transfers"
            " and withdrawals, all accounted for[/green]"
        )
    folder = ctx.options.output_dir
    json_path = report.write_json(
        folder / f"{stamp}.json", _document(ctx, rows, problems, started_at, mode)
    )
    png_path = charts.draw(
        ctx.timeline, start=ctx.started, path=folder / f"{stamp}.png", title=title
    )
    console.print(f"figures: {json_path}\nchart:   {png_path}")
    return Outcome(dict(ctx.figures), problems, json_path, png_path)


def _mode(target_running: bool) -> str:
    return "running suite" if target_running else "fresh embedded suite"


def _document(
    ctx: BenchContext,
    rows: list[report.Row],
    problems: list[str],
    started_at: datetime,
    mode: str,
) -> dict[str, Any]:
    options = {
        k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(ctx.options).items()
    }
    return {
        "started_at": started_at.isoformat(),
        "run_id": ctx.run_id,
        "git_commit": _git_commit(),
        "mode": mode,
        "machine": {"cpus": os.cpu_count(), "load_average": list(os.getloadavg())},
        "options": options,
        "figures": ctx.figures,
        "table": [dataclasses.asdict(row) for row in rows],
        "cost": {kind: cost.document(c) for kind, c in ctx.costs.items()},
        "deposits": len(ctx.deposits),
        "transfers_and_withdrawals": len(ctx.movements),
        "notes": ctx.notes,
        "money_problems": problems,
        "money_check_passed": not problems,
    }


def _git_commit() -> str:
    """Which code the figures belong to, for before/after comparisons; empty outside git."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 - git from PATH, no shell
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


__all__ = ["SECTIONS", "Outcome", "Section", "SuiteFailed", "measure_all", "publish", "run"]

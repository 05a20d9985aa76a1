"""`paysuite soak` (`make soak`): closed-loop deposits for minutes on a fresh suite whose
streams are trimmed every second, then a check that money kept moving the whole time.

Each of `clients` creates a deposit and waits until it is terminal before the next, so a
pipeline that stops (a relay or consumer that died) stops the load and shows as deposits left
behind. The very short stream retention makes the relay's trim race the consumers'
acknowledgements all along: the race that once stopped the payment relay without a word.

Afterwards, with the load stopped and a settle window passed:
- every deposit the suite accepted is terminal and completed (the simulator approves all), and
  the balances equal the completed deposits (the bench's money check);
- no background task failed or stalled in any process (`background_task_failures_total` and
  `background_task_stalls_total` on every /metrics), every process is still running and
  reports SERVING on readiness and liveness;
- every outbox is drained and no stream grew past what the retention allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.request import urlopen

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from bench import deposits
from bench.auth import bench_token
from bench.checks import TERMINAL
from bench.context import BenchContext, BenchOptions
from bench.context import clients as bench_clients
from bench.harness import check_money
from bench.suite import RunningSuite, fresh_suite
from bench.watch import CompletionWatcher
from common.config import Settings
from common.events import PAYMENT_STREAM, suite_stream_keys
from devstack import pipeline, supervisor
from paysuite.payment.v1 import payment_pb2, payment_pb2_grpc

# How long the stream keeps acknowledged entries in the soak: trimming runs every second.
SOAK_STREAM_RETENTION_S = 1
# After the watcher has not seen a payment finish for this long, the client asks the service.
WATCH_PATIENCE_S = 5.0
POLL_S = 0.5
# A stream should hold about one retention of events; this many entries means trimming lags.
STREAM_BOUND = 20_000
TASK_COUNTERS = ("background_task_failures_total", "background_task_stalls_total")


@dataclass
class SoakReport:
    duration_s: float
    created: int = 0
    completed: int = 0
    create_errors: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    task_failures: dict[str, float] = field(default_factory=dict)  # "process / task" -> count
    longest_stream: int = 0
    longest_stream_name: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class _Client:
    """Creates a deposit, waits for it to be terminal, and goes again until the deadline."""

    def __init__(
        self,
        ctx: BenchContext,
        payments: payment_pb2_grpc.PaymentServiceAsyncStub,
        watcher: CompletionWatcher,
        report: SoakReport,
    ) -> None:
        self._create = deposits.Depositor(payments, ctx, "soak")
        self._payments = payments
        self._watcher = watcher
        self._report = report

    async def run(self, first: int, step: int, deadline: float) -> None:
        i = first
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                deposit = await self._create(i)
            except Exception as exc:  # counted: a create the suite refused is a problem
                self._report.create_errors.append(f"{type(exc).__name__}: {exc}"[:200])
                await asyncio.sleep(POLL_S)
                continue
            self._report.created += 1
            status = await self._finished(deposit.payment_id)
            if status == "completed":
                self._report.completed += 1
                self._report.latencies_s.append(time.perf_counter() - started)
            i += step

    async def _finished(self, payment_id: str) -> str:
        with contextlib.suppress(TimeoutError):
            return await self._watcher.wait_for(payment_id, timeout_s=WATCH_PATIENCE_S)
        # Not seen on the stream (trimmed before the watcher read it, say): ask the service.
        while True:
            payment = await self._payments.GetPayment(
                payment_pb2.GetPaymentRequest(payment_id=payment_id), timeout=30
            )
            name = payment_pb2.PaymentStatus.Name(payment.status)
            status = name.removeprefix("PAYMENT_STATUS_").lower()
            if status in TERMINAL:
                return status
            await asyncio.sleep(POLL_S)


async def _load(ctx: BenchContext, duration_s: float, clients: int) -> SoakReport:
    report = SoakReport(duration_s=duration_s)
    async with bench_clients(ctx) as to:
        ctx.accounts = await deposits.open_accounts(to.wallet, ctx)
        stream = ctx.settings.stream_prefix + PAYMENT_STREAM
        async with CompletionWatcher(to.redis, stream) as watcher:
            deadline = time.perf_counter() + duration_s
            workers = [_Client(ctx, to.payments, watcher, report) for _ in range(clients)]
            await asyncio.gather(*(w.run(n, clients, deadline) for n, w in enumerate(workers)))
        # Every stream of the suite: each is trimmed its own way (by its groups' floor, or by
        # the retention alone when it is read without groups), and each must stay bounded.
        lengths = await pipeline.stream_lengths(
            to.redis, suite_stream_keys(ctx.settings.stream_prefix)
        )
        report.longest_stream, report.longest_stream_name = max(
            ((length, name) for name, length in lengths.items()), default=(0, "")
        )
    return report


def task_failures(processes: Sequence[supervisor.Process]) -> dict[str, float]:
    """Every failed or stalled background task, by process and task, from each /metrics
    (a process whose metrics cannot be read counts as one failure: nothing is assumed)."""
    found: dict[str, float] = {}
    for proc in processes:
        if not proc.metrics_url:
            continue
        try:
            with urlopen(proc.metrics_url, timeout=5) as response:  # noqa: S310 - local URL
                text = response.read().decode()
        except OSError as exc:
            found[f"{proc.name} / metrics unreadable ({exc})"] = 1
            continue
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in TASK_COUNTERS and sample.value:
                    key = f"{proc.name} / {sample.labels.get('task', '?')} ({sample.name})"
                    found[key] = sample.value
    return found


def _health_problems(suite: RunningSuite) -> list[str]:
    problems = []
    for proc in suite.processes:
        child = suite.children.get(proc.name)
        if child is not None and child.poll() is not None:
            problems.append(f"{proc.name} exited with code {child.returncode}")
        elif proc.kind == "grpc":
            for service in ("", supervisor.LIVENESS_SERVICE):
                status = supervisor.grpc_status(proc.endpoint, service)
                if status != 1:  # SERVING
                    problems.append(f"{proc.name} health {service or 'readiness'}: {status}")
    return problems


async def _outbox_problems(settings: Settings) -> list[str]:
    problems = []
    for status in await pipeline.outbox_status(settings):
        if status.error:
            problems.append(f"outbox {status.database} unreachable: {status.error}")
        elif status.unpublished:
            problems.append(f"outbox {status.database}: {status.unpublished} rows unpublished")
    return problems


def run_soak(
    base: Settings, console: Console, *, duration_s: float, clients: int, settle_s: float = 60.0
) -> SoakReport:
    env = {"PAYSUITE_STREAM_RETENTION_S": str(SOAK_STREAM_RETENTION_S)}
    console.print(
        f"soak: {clients} clients, closed-loop deposits for {duration_s:.0f} s, streams"
        f" trimmed every {SOAK_STREAM_RETENTION_S} s"
    )
    with fresh_suite(base, env=env) as suite:
        options = BenchOptions(clients=clients, settle_timeout_s=settle_s)
        ctx = BenchContext(
            settings=suite.settings,
            options=options,
            run_id="soak",
            token=bench_token(suite.settings),
        )
        report = asyncio.run(_load(ctx, duration_s, clients))
        report.problems += asyncio.run(check_money(ctx))
        report.problems += asyncio.run(_outbox_problems(suite.settings))
        report.task_failures = task_failures(suite.processes)
        report.problems += [
            f"background task failed: {k} = {v:.0f}" for k, v in report.task_failures.items()
        ]
        report.problems += _health_problems(suite)
    if report.create_errors:
        report.problems.append(
            f"{len(report.create_errors)} creates failed, e.g. {report.create_errors[0]}"
        )
    if report.longest_stream > STREAM_BOUND:
        report.problems.append(
            f"the stream {report.longest_stream_name} holds {report.longest_stream} entries"
        )
    if report.completed == 0:
        report.problems.append("no deposit completed")
    print_report(report, console)
    return report


def print_report(report: SoakReport, console: Console) -> None:
    table = Table(title="soak", title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    latencies = sorted(report.latencies_s)
    p50 = statistics.median(latencies) if latencies else 0.0
    p99 = latencies[int(len(latencies) * 0.99) - 1] if len(latencies) >= 100 else 0.0
    rows = (
        ("duration", f"{report.duration_s:.0f} s"),
        ("deposits created", f"{report.created:,}"),
        ("deposits completed (client saw)", f"{report.completed:,}"),
        ("completed per second", f"{report.completed / report.duration_s:.1f}"),
        ("create -> completed p50 / p99", f"{p50 * 1000:.0f} / {p99 * 1000:.0f} ms"),
        ("longest stream at the end", f"{report.longest_stream:,}"),
        ("background task failures or stalls", f"{sum(report.task_failures.values()):.0f}"),
        ("problems", str(len(report.problems))),
    )
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for problem in report.problems:
        console.print(f"[red]{problem}[/red]")
    console.print("[green]soak passed[/green]" if report.ok else "[red]soak FAILED[/red]")

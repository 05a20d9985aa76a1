"""`paysuite recover --once`: every recovery sweep once, against the running suite, and a
table of what each found and did.

It runs the same worker as `python -m recovery_worker` (same sweeps, same leases), so it is
safe beside running workers: a sweep one of them is doing right now shows as `busy`.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import grpc
import typer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.exceptions import RedisError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from common.config import ConfigError, Settings
from common.logging import configure_logging
from common.tokens import with_local_key
from paysuite_cli.endpoints import SuiteNotRunning, locate
from recovery_worker.bootstrap import Connections, build_worker
from recovery_worker.domain.model import SweepReport, SweepStatus

PROBE_TIMEOUT_S = 2.0

console = Console()


def recover(
    once: Annotated[bool, typer.Option("--once", help="Run every sweep once, then exit.")] = False,
) -> None:
    """Run the recovery sweeps once and show what each did (the worker itself runs as
    `python -m recovery_worker`, started by `paysuite up`)."""
    if not once:
        console.print(
            "the recovery worker runs as `python -m recovery_worker` (`paysuite up` starts it);"
            " `paysuite recover --once` runs every sweep once here"
        )
        raise typer.Exit(2)
    try:
        settings = locate()
        # The table says what each sweep did; only warnings (a stalled consumer) go to the log.
        configure_logging(level="WARNING", fmt=settings.log_format)
        settings = with_local_key(
            settings.model_copy(update={"redis_url": settings.require_redis_url()})
        )
        reports = asyncio.run(run_once(settings))
    except (ConfigError, SuiteNotRunning) as exc:
        console.print(f"[red]paysuite recover: {escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    console.print(report_table(reports))


async def run_once(settings: Settings) -> list[SweepReport]:
    connections = Connections.open(settings)
    try:
        await _check_running(settings, connections)
        return await build_worker(settings, connections).run_round()
    finally:
        await connections.close()


async def _check_running(settings: Settings, connections: Connections) -> None:
    """The payment service and Redis answer: otherwise every sweep would only say so."""
    try:
        await asyncio.wait_for(connections.redis.ping(), timeout=PROBE_TIMEOUT_S)
    except (RedisError, OSError, TimeoutError):
        raise SuiteNotRunning("Redis does not answer: is the suite running?") from None
    # The typeshed stub declares no methods on HealthStub.
    stub = health_pb2_grpc.HealthStub(connections.payment)
    try:
        await stub.Check(  # type: ignore[attr-defined]  # the typeshed HealthStub declares no methods
            health_pb2.HealthCheckRequest(service=""), timeout=PROBE_TIMEOUT_S
        )
    except grpc.aio.AioRpcError:
        raise SuiteNotRunning(
            f"the payment service does not answer at {settings.payment_target}:"
            " is the suite running?"
        ) from None


_STYLE = {
    SweepStatus.DONE: "green",
    SweepStatus.BUSY: "yellow",
    SweepStatus.NOT_DUE: "dim",
    SweepStatus.UNAVAILABLE: "red",
    SweepStatus.FAILED: "red",
}


def report_table(reports: list[SweepReport]) -> Table:
    table = Table(title="recovery sweeps", title_justify="left")
    for column in ("sweep", "status", "found", "acted", "skipped", "notes"):
        table.add_column(
            column, justify="right" if column in ("found", "acted", "skipped") else "left"
        )
    for report in reports:
        style = _STYLE[report.status]
        table.add_row(
            report.sweep,
            f"[{style}]{report.status.value}[/{style}]",
            str(report.found),
            str(report.acted),
            str(report.skipped),
            escape("\n".join(report.notes)),
        )
    return table

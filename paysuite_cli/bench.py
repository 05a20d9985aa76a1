"""`paysuite bench` (and `make bench`): throughput and latency of the suite, beside baselines."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from common.config import ConfigError, load_settings
from common.logging import configure_logging
from paysuite_cli.endpoints import SuiteNotRunning, locate

# Piped into a file or CI log, rich would wrap the table at 80 columns.
console = Console() if sys.stdout.isatty() else Console(width=130)


def soak(
    duration: Annotated[
        float, typer.Option(help="Seconds of closed-loop deposits.", min=1.0)
    ] = 180.0,
    clients: Annotated[int, typer.Option(help="Concurrent clients.", min=1)] = 32,
) -> None:
    """Closed-loop deposits for minutes on a fresh suite whose streams are trimmed every
    second; exit 1 unless every deposit completed and no background task failed."""
    from bench.soak import run_soak
    from bench.suite import SuiteFailed

    try:
        settings = load_settings()
        configure_logging(level="WARNING", fmt=settings.log_format)
        report = run_soak(settings, console, duration_s=duration, clients=clients)
    except ConfigError as exc:
        console.print(f"[red]soak failed: {exc}[/red]", soft_wrap=True)
        raise typer.Exit(2) from None
    except SuiteFailed as exc:
        console.print(f"[red]soak failed: {exc}[/red]")
        raise typer.Exit(1) from None
    if not report.ok:
        raise typer.Exit(1)


def bench(
    quick: Annotated[bool, typer.Option(help="Every phase, a few seconds each.")] = False,
    duration: Annotated[
        float | None,
        typer.Option(
            help="Seconds of closed-loop deposits (default 20; 4 with --quick).",
            envvar="PAYSUITE_BENCH_DURATION_S",
        ),
    ] = None,
    open_duration: Annotated[
        float | None,
        typer.Option(help="Seconds of open-loop deposits (default 10; 3 with --quick)."),
    ] = None,
    clients: Annotated[int, typer.Option(help="Concurrent clients in the closed loops.")] = 32,
    events: Annotated[
        int | None,
        typer.Option(
            help="Events through the relay and the consumer (default 20,000; 3,000 with --quick).",
            min=1,
        ),
    ] = None,
    target_running: Annotated[
        bool,
        typer.Option(help="Measure the suite already running (PAYSUITE_* endpoints)."),
    ] = False,
    output: Annotated[Path, typer.Option(help="Folder for the JSON and the PNG.")] = Path(
        "bench/results"
    ),
) -> None:
    """Measure the suite under load; exit 1 if any money is lost or doubled."""
    from bench import harness
    from bench.context import BenchOptions

    overrides: dict[str, object] = {"clients": clients, "output_dir": output}
    for key, value in (
        ("duration_s", duration),
        ("open_duration_s", open_duration),
        ("pipeline_events", events),
    ):
        if value is not None:
            overrides[key] = value
    options = BenchOptions.quick(**overrides) if quick else BenchOptions(**overrides)  # type: ignore[arg-type]  # overrides holds only given options, each of its field's type
    try:
        settings = load_settings()
        if target_running:  # found the way every command finds the running suite
            settings = locate(settings)
        # The bench's own process runs a relay and a consumer: their info lines are noise here.
        configure_logging(level="WARNING", fmt=settings.log_format)
        outcome = harness.run(settings, options, console, target_running=target_running)
    except (ConfigError, SuiteNotRunning) as exc:
        console.print(f"[red]bench failed: {exc}[/red]", soft_wrap=True)
        raise typer.Exit(2) from None
    except harness.SuiteFailed as exc:
        console.print(f"[red]bench failed: {exc}[/red]")
        raise typer.Exit(1) from None
    if not outcome.ok:
        raise typer.Exit(1)

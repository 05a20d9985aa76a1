"""`paysuite chaos` (and `make chaos`): the suite under a seeded workload and nemesis, then
every invariant checked. Exit 1 on any violation, with the seed and the fault schedule."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from common.config import ConfigError, load_settings
from common.logging import configure_logging
from paysuite_cli.endpoints import SuiteNotRunning, locate

# Piped into a file or CI log, rich would wrap the tables at 80 columns.
console = Console() if sys.stdout.isatty() else Console(width=150)
SHOWN_AT_THE_END = 5


def chaos(
    duration: Annotated[
        float, typer.Option(help="Seconds of workload under faults (a soak: 3600).", min=10)
    ] = 120.0,
    seed: Annotated[
        int | None,
        typer.Option(help="Replays the same workload and fault schedule (default: random)."),
    ] = None,
    faults: Annotated[
        str,
        typer.Option(
            help="all, or a comma list of families (kill, pause, db-refuse, provider), kinds"
            " (provider-outage) or kind:target (kill:redis, pause:postgres)."
        ),
    ] = "all",
    clients: Annotated[int, typer.Option(help="Concurrent clients.", min=1)] = 6,
    recovery_window: Annotated[
        float,
        typer.Option(help="Seconds after the last fault for every payment to finish.", min=1),
    ] = 60.0,
    target_running: Annotated[
        bool,
        typer.Option(
            help="Attack the suite already running (PAYSUITE_* endpoints): database and"
            " provider faults only, its processes belong to its own supervisor."
        ),
    ] = False,
    output: Annotated[Path, typer.Option(help="Folder for the JSON and the PNG.")] = Path(
        "chaos/results"
    ),
) -> None:
    """Run every kind of payment under kills, pauses, outages and provider chaos, then check
    every invariant; exit 1 on any violation."""
    from bench.suite import SuiteFailed
    from chaos.run import ChaosOptions, run

    # gRPC's core logs a line at every fork (the supervisor restarts processes while calls are
    # in flight); read when the first channel is made, which is after this.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    chosen = seed if seed is not None else secrets.randbelow(1_000_000)
    options = ChaosOptions(
        duration_s=duration,
        seed=chosen,
        faults=faults,
        clients=clients,
        recovery_window_s=recovery_window,
        output_dir=output,
    )
    try:
        settings = load_settings()
        if target_running:
            settings = locate(settings)
        configure_logging(level="WARNING", fmt=settings.log_format)
        outcome = run(settings, options, console, target_running=target_running)
    except (ConfigError, SuiteNotRunning) as exc:
        console.print(f"[red]chaos failed: {exc}[/red]", soft_wrap=True)
        raise typer.Exit(2) from None
    except SuiteFailed as exc:
        console.print(f"[red]chaos failed (seed {chosen}): {exc}[/red]")
        raise typer.Exit(1) from None
    if outcome.ok:
        console.print(f"[green]chaos: 0 violations (seed {chosen})[/green]")
        return
    console.print(f"[red]chaos: violations found; replay with --seed {chosen}. Schedule:[/red]")
    for planned in outcome.plan:
        console.print(f"  {planned.at:7.1f} s  {planned.name}  for {planned.duration:.1f} s")
    # Again after the schedule, shortly: CI keeps only the tail of what a run printed.
    for result in outcome.results:
        if not result.ok:
            console.print(f"[red]FAILED {escape(result.name)}: {escape(result.summary)}[/red]")
            for violation in result.violations[:SHOWN_AT_THE_END]:
                console.print(f"[red]  {escape(violation)}[/red]")
    console.print(f"results: {outcome.json_path}")
    raise typer.Exit(1)

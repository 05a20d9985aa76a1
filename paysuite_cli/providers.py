"""`paysuite providers` (breaker states and counts) and `paysuite sim set` (simulator chaos).

Registered in paysuite_cli.main; kept apart so the gateway's CLI grows here, not there.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC
from typing import Annotated, Any

import aiohttp
import typer
from rich.console import Console
from rich.table import Table

from common.config import Settings
from common.grpc.client import create_channel
from paysuite.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from paysuite_cli import credentials
from paysuite_cli.endpoints import locate

console = Console()
sim = typer.Typer(help="Make the provider simulators misbehave (run time, per instance).")


def _settings() -> Settings:
    return locate()


def providers() -> None:
    """Show each provider's circuit breaker: state, since when, and its window's counts."""
    settings = _settings()
    asyncio.run(_show_providers(settings))


async def _show_providers(settings: Settings) -> None:
    async with create_channel(
        settings.gateway_target, token=credentials.operator(settings)
    ) as channel:
        response = await gateway_pb2_grpc.GatewayServiceStub(channel).GetProviderStatus(
            gateway_pb2.GetProviderStatusRequest(), timeout=10
        )
    table = Table(title="providers, in failover order", title_justify="left")
    for column in ("#", "provider", "breaker", "since", "calls", "failures", "slow", "rejected"):
        table.add_column(column)
    for p in response.providers:
        since = p.state_since.ToDatetime(tzinfo=UTC).strftime("%H:%M:%S")
        colour = {"closed": "green", "open": "red"}.get(p.breaker_state, "yellow")
        table.add_row(
            str(p.priority),
            p.provider,
            f"[{colour}]{p.breaker_state}[/]",
            since,
            str(p.calls),
            str(p.failures),
            str(p.slow_calls),
            str(p.rejected_calls),
        )
    console.print(table)


def _value(raw: str) -> Any:
    """`0.2` -> 0.2, `true` -> True, `300` -> 300: the knob's JSON value."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


@sim.command("set")
def sim_set(
    instance: Annotated[str, typer.Argument(help="sim-primary, sim-secondary, ...")],
    knobs: Annotated[
        list[str],
        typer.Argument(
            help="KNOB=VALUE: settle_delay_ms, decline_rate, error_rate, timeout_rate,"
            " drop_rate, webhook_drop_rate, webhook_duplicate_rate, webhook_delay_rate,"
            " webhook_delay_ms,"
            " webhook_reorder_rate, outage"
        ),
    ],
) -> None:
    """Change a simulator's behaviour now, e.g. `paysuite sim set sim-primary outage=true`."""
    settings = _settings()
    urls = {p.name: p.url for p in settings.provider_configs()}
    if instance not in urls:
        console.print(f"[red]unknown simulator {instance!r}; known: {', '.join(urls)}[/red]")
        raise typer.Exit(2)
    changes: dict[str, Any] = {}
    for knob in knobs:
        name, sep, raw = knob.partition("=")
        if not sep:
            console.print(f"[red]expected KNOB=VALUE, got {knob!r}[/red]")
            raise typer.Exit(2)
        changes[name] = _value(raw)
    status, body = asyncio.run(_patch(f"{urls[instance]}/_sim/config", changes))
    if status == 0:  # nothing answered
        console.print(f"[red]{body}: is the suite running?[/red]")
        raise typer.Exit(2)
    if status != 200:
        console.print(f"[red]{instance} refused: {body}[/red]")
        raise typer.Exit(1)
    console.print_json(data=body)


@sim.command("show")
def sim_show(
    instance: Annotated[str, typer.Argument(help="sim-primary, sim-secondary, ...")],
) -> None:
    """Show a simulator's current behaviour."""
    sim_set(instance, [])


async def _patch(url: str, changes: dict[str, Any]) -> tuple[int, Any]:
    try:
        async with aiohttp.ClientSession() as http, http.patch(url, json=changes) as response:
            return response.status, await response.json()
    except aiohttp.ClientError as exc:
        return 0, f"cannot reach {url}: {type(exc).__name__}"

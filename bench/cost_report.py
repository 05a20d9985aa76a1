"""The cost table: per completed payment of each kind, one column per kind, with the deposit's
budgets of design.md §9. Details (gRPC calls by method, Redis commands by command, statements
by kind) are in the JSON only."""

from __future__ import annotations

import math
from collections.abc import Mapping

from rich.table import Table

from bench.cost import (
    CPU_UNITS,
    LOAD_CLIENT,
    REFERENCE_UNITS,
    STATEMENT_KINDS,
    Cost,
    per_payment,
)
from bench.figures import Budget

# Budgets for a deposit (design.md §9); the other kinds have none yet.
DEPOSIT_BUDGETS = {
    "cpu_ms.total": Budget(at_most=12),
    "statements.total": Budget(at_most=20),
    "transactions.total": Budget(at_most=4),
    "events_published.total": Budget(at_most=4, whole=True),
}

_GROUPS = {
    "cpu_ms": "CPU ms",
    CPU_UNITS: "CPU in load-client units",
    REFERENCE_UNITS: "CPU in reference units",
    "transactions": "PostgreSQL transactions",
    "rollbacks": "PostgreSQL transactions",
    "statements": "SQL statements",
    "grpc_calls": "gRPC calls",
    "http_requests": "HTTP requests",
    "events_published": "events published",
    "relay_claims": "outbox relay claims (a transaction each)",
    "events_consumed": "events consumed",
    "events_skipped": "events delivered to a group that acknowledged them unread",
    "redis_commands": "Redis commands",
}
_DETAILS = {
    "total": "total",
    "rollbacks.total": "of which rollbacks",
    f"cpu_ms.{LOAD_CLIENT}": "load client (this process; not in the total)",
    "cpu_ms.total": "total (every process but the load client)",
    f"{CPU_UNITS}.total": "total ÷ load client (steadier between runs than ms)",
    f"{REFERENCE_UNITS}.total": "total ÷ the reference unit's CPU (bench/reference.py)",
    f"{REFERENCE_UNITS}.unit_ms": "the reference unit's CPU ms (the machine's speed now)",
    "statements.parses": "parses (extended protocol)",
    "statements.executes": "executes (extended protocol)",
    "statements.simple": "simple-protocol statements",
    "statements.failed": "failed (logged as ERROR)",
    "http_requests.provider": "to the provider (gateway → simulator)",
    "http_requests.webhooks": "webhooks (simulator → adapter)",
    "redis_commands.suite": "the suite's",
    f"redis_commands.{LOAD_CLIENT}": "load client's (XREAD, INFO; not in the suite's)",
}
# Shown in the table: every key of these groups, and these keys of the others.
_EVERY_KEY_OF = ("cpu_ms", "transactions", "statements", "http_requests")
_SHOWN = (
    f"{CPU_UNITS}.total",
    f"{REFERENCE_UNITS}.total",
    f"{REFERENCE_UNITS}.unit_ms",
    "rollbacks.total",
    "grpc_calls.total",
    "events_published.total",
    "relay_claims.total",
    "events_consumed.total",
    "events_skipped.total",
    "redis_commands.suite",
    f"redis_commands.{LOAD_CLIENT}",
)


def label(key: str) -> str:
    group, _, detail = key.partition(".")
    name = _DETAILS.get(key) or _DETAILS.get(detail) or detail
    if group == "statements" and detail in STATEMENT_KINDS:
        name = f"{detail} (all databases)"
    return f"{_GROUPS.get(group, group)}: {name}"


def shown(key: str) -> bool:
    return key.partition(".")[0] in _EVERY_KEY_OF or key in _SHOWN


def rows(costs: Mapping[str, Cost]) -> list[tuple[str, list[float]]]:
    """(key, a value per kind) in the first kind's order, then keys only later kinds have."""
    figures = {kind: per_payment(cost) for kind, cost in costs.items()}
    keys: list[str] = []
    for values in figures.values():
        keys.extend(k for k in values if k not in keys and shown(k))
    return [(key, [figures[kind].get(key, math.nan) for kind in costs]) for key in keys]


def render(costs: Mapping[str, Cost], *, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("per completed payment", justify="left")
    for kind in costs:
        table.add_column(kind, justify="right")
    table.add_column("deposit budget", justify="left")
    table.add_column("pass", justify="right")
    kinds = list(costs)
    table.add_row(
        "payments completed in the cost window (statement window)",
        *(f"{c.completed} ({c.statement_completed})" for c in costs.values()),
        "",
        "",
    )
    table.add_row("cost window, s", *(f"{c.usage.seconds:.1f}" for c in costs.values()), "", "")
    for key, values in rows(costs):
        budget = DEPOSIT_BUDGETS.get(key) if "deposit" in kinds else None
        deposit_value = values[kinds.index("deposit")] if budget else math.nan
        table.add_row(
            label(key),
            *(_number(v) for v in values),
            budget.describe() if budget else "",
            _verdict(budget.passes(deposit_value, None)) if budget else "",
        )
    return table


def _number(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.2f}"


def _verdict(passed: bool) -> str:
    return "[green]pass[/green]" if passed else "[red]FAIL[/red]"

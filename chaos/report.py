"""A chaos run's output: tables on the console, the fault timeline, JSON and a PNG."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.report import write_json
from bench.stats import per_second
from chaos.checker import CheckResult
from chaos.history import OK, Fault, History, Observed
from chaos.observe import Backlog

FAMILY_COLOURS = {"kill": "red", "pause": "orange", "db-refuse": "purple", "provider": "steelblue"}
SHOWN_VIOLATIONS = 10


def family(kind: str) -> str:
    return "provider" if kind.startswith("provider-") else kind


def payments_table(observed: Observed) -> Table:
    counts = Counter((p.kind, p.status) for p in observed.payments.values())
    statuses = sorted({status for _, status in counts})
    table = Table(title="payments by kind and final state", title_justify="left")
    table.add_column("kind")
    for status in statuses:
        table.add_column(status, justify="right")
    table.add_column("total", justify="right")
    for kind in sorted({kind for kind, _ in counts}):
        row = [counts.get((kind, s), 0) for s in statuses]
        table.add_row(kind, *(str(n) for n in row), str(sum(row)))
    return table


def calls_table(history: History) -> Table:
    counts = Counter((c.op, c.via, c.outcome) for c in history.calls)
    table = Table(title="requests by kind, door and answer", title_justify="left")
    for column in ("request", "via", "answer", "count"):
        table.add_column(column, justify="right" if column == "count" else "left")
    for (op, via, outcome), n in sorted(counts.items()):
        table.add_row(op, via, outcome, str(n))
    return table


def faults_table(faults: Sequence[Fault]) -> Table:
    counts = Counter(f.kind for f in faults)
    failed = Counter(f.kind for f in faults if f.note.startswith("not applied"))
    table = Table(title="faults by kind", title_justify="left")
    for column in ("fault", "count", "not applied"):
        table.add_column(column, justify="left" if column == "fault" else "right")
    for kind, n in sorted(counts.items()):
        table.add_row(kind, str(n), str(failed.get(kind, 0)))
    return table


def timeline_table(faults: Sequence[Fault]) -> Table:
    table = Table(title="fault timeline (seconds since the start)", title_justify="left")
    for column in ("start", "end", "fault", "note"):
        table.add_column(column, justify="right" if column in ("start", "end") else "left")
    for f in sorted(faults, key=lambda f: f.start):
        table.add_row(f"{f.start:.1f}", f"{f.end:.1f}", f.name, escape(f.note[:80]))
    return table


def checks_table(results: Sequence[CheckResult]) -> Table:
    table = Table(title="checks", title_justify="left")
    for column in ("check", "result", "detail"):
        table.add_column(column)
    for result in results:
        verdict = (
            "[green]ok[/green]" if result.ok else f"[red]{len(result.violations)} FAILED[/red]"
        )
        table.add_row(result.name, verdict, escape(result.summary))
    return table


def print_all(
    console: Console,
    history: History,
    observed: Observed,
    results: Sequence[CheckResult],
    restarts: Sequence[str],
) -> None:
    console.print(calls_table(history))
    console.print(payments_table(observed))
    console.print(faults_table(history.faults))
    console.print(timeline_table(history.faults))
    console.print(f"the supervisor restarted something {len(restarts)} times")
    console.print(checks_table(results))
    for result in results:
        for violation in result.violations[:SHOWN_VIOLATIONS]:
            console.print(f"[red]VIOLATION {escape(result.name)}: {escape(violation)}[/red]")
        if len(result.violations) > SHOWN_VIOLATIONS:
            more = len(result.violations) - SHOWN_VIOLATIONS
            console.print(f"[red]  ... and {more} more (see the JSON)[/red]")


def document(
    history: History,
    observed: Observed,
    results: Sequence[CheckResult],
    *,
    meta: dict[str, Any],
    samples: Sequence[Backlog],
    restarts: Sequence[str],
) -> dict[str, Any]:
    return {
        **meta,
        "passed": all(r.ok for r in results),
        "checks": [dataclasses.asdict(r) for r in results],
        "payments_by_kind_and_state": _counts(
            (p.kind, p.status) for p in observed.payments.values()
        ),
        "requests_by_kind_and_answer": _counts((c.op, c.outcome) for c in history.calls),
        "faults_by_kind": dict(Counter(f.kind for f in history.faults)),
        "faults": [dataclasses.asdict(f) for f in sorted(history.faults, key=lambda f: f.start)],
        "restarts": list(restarts),
        "backlog": [dataclasses.asdict(s) for s in samples],
        "calls": [dataclasses.asdict(c) for c in history.calls],
    }


def _counts(pairs: Any) -> dict[str, int]:
    return {f"{a}/{b}": n for (a, b), n in sorted(Counter(pairs).items())}


def write(path: Path, doc: dict[str, Any]) -> Path:
    return write_json(path, doc)


def draw(
    history: History, samples: Sequence[Backlog], *, path: Path, title: str, end: float
) -> Path:
    figure = Figure(figsize=(13, 7), layout="constrained")
    figure.suptitle(title)
    throughput, pipeline = figure.subplots(2, 1, sharex=True)
    for op in sorted({c.op for c in history.calls}):
        counts = per_second(
            [c.ended for c in history.calls if c.op == op and c.outcome == OK], start=0
        )
        throughput.plot(range(len(counts)), counts, label=op, linewidth=1)
    throughput.set(ylabel="answered OK per second")
    throughput.set_title("throughput by kind, faults as bands (kills as lines)")
    for name, values in (
        ("open payments", [s.open_payments for s in samples]),
        ("outbox backlog", [s.outbox for s in samples]),
        ("pending entries", [s.pending for s in samples]),
    ):
        pipeline.plot([s.at for s in samples], values, label=name, linewidth=1)
    pipeline.set(xlabel="seconds since the start", ylabel="count")
    pipeline.set_title("backlog")
    for axes in (throughput, pipeline):
        _bands(axes, history.faults)
        axes.axvline(end, color="black", linestyle="--", linewidth=1)
        axes.legend(fontsize="small", loc="upper right")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    return path


def _bands(axes: Any, faults: Sequence[Fault]) -> None:
    for fault in faults:
        colour = FAMILY_COLOURS.get(family(fault.kind), "grey")
        if fault.kind == "kill":
            axes.axvline(fault.start, color=colour, alpha=0.5, linewidth=1)
        else:
            axes.axvspan(fault.start, max(fault.end, fault.start + 0.2), color=colour, alpha=0.12)

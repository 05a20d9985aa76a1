"""The bench's output: a table of figures with baselines, ratios and budgets, and a JSON file."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from bench.figures import FIGURES, describe


@dataclass(frozen=True, slots=True)
class Row:
    label: str
    value: float
    unit: str
    baseline: float | None
    ratio: float | None
    budget: str
    passed: bool | None  # None: no budget


def rows(figures: Mapping[str, float]) -> list[Row]:
    """Described figures in their documented order, then any others in the order given."""
    known = [f.key for f in FIGURES if f.key in figures]
    extra = [key for key in figures if key not in {f.key for f in FIGURES}]
    return [_row(key, figures) for key in known + extra]


def _row(key: str, figures: Mapping[str, float]) -> Row:
    figure = describe(key)
    value = figures[key]
    baseline = figures.get(figure.baseline) if figure.baseline else None
    ratio = value / baseline if baseline and not math.isnan(value) else None
    return Row(
        label=figure.label,
        value=value,
        unit=figure.unit,
        baseline=baseline,
        ratio=ratio,
        budget=figure.budget.describe() if figure.budget else "",
        passed=figure.budget.passes(value, ratio) if figure.budget else None,
    )


def render(figure_rows: list[Row], *, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for name in ("figure", "value", "unit", "baseline", "ratio", "budget", "pass"):
        table.add_column(name, justify="left" if name in ("figure", "budget") else "right")
    for row in figure_rows:
        table.add_row(
            row.label,
            _number(row.value),
            row.unit,
            _number(row.baseline) if row.baseline is not None else "",
            f"{row.ratio:.4f}" if row.ratio is not None else "",
            row.budget,
            _verdict(row.passed),
        )
    return table


def _number(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.1f}"


def _verdict(passed: bool | None) -> str:
    if passed is None:
        return ""
    return "[green]pass[/green]" if passed else "[red]FAIL[/red]"


def write_json(path: Path, document: Mapping[str, Any]) -> Path:
    """NaN (a figure that could not be measured) becomes null: strict JSON readers reject NaN."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_without_nan(document), indent=2, sort_keys=True) + "\n")
    return path


def _without_nan(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _without_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nan(v) for v in value]
    return value

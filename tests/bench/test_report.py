from __future__ import annotations

import json
import math
from pathlib import Path

from rich.console import Console

from bench.figures import Budget
from bench.report import render, rows, write_json


def test_a_figure_is_compared_with_its_baseline_and_budget() -> None:
    figures = {"health_calls_per_s": 4000.0, "deposits_completed_per_s": 300.0}
    completed = rows(figures)[1]
    assert completed.baseline == 4000.0
    assert completed.ratio == 0.075
    assert completed.budget == "≥ 250, ratio ≥ 0.0625"
    assert completed.passed is True


def test_a_fast_figure_still_fails_when_its_ratio_is_too_low() -> None:
    figures = {"health_calls_per_s": 8000.0, "deposits_completed_per_s": 300.0}
    assert rows(figures)[1].passed is False


def test_a_latency_over_budget_fails_and_one_not_measured_fails_too() -> None:
    over = rows({"open_create_p99_ms": 51.0})[0]
    missing = rows({"webhook_to_completed_p99_ms": math.nan})[0]
    assert (over.passed, missing.passed) == (False, False)
    assert rows({"open_create_p99_ms": 49.0})[0].passed is True


def test_rows_keep_the_documented_order_then_unknown_figures() -> None:
    figures = {"wallet_postings_per_s": 1.0, "raw_xadd_per_s": 2.0, "health_calls_per_s": 3.0}
    labels = [row.label for row in rows(figures)]
    assert labels[:2] == ["baseline: health Check, closed loop", "baseline: raw pipelined XADD"]
    assert labels[2] == "wallet_postings_per_s"
    assert rows(figures)[2].passed is None


def test_budget_descriptions() -> None:
    assert Budget(at_most=150).describe() == "≤ 150"
    assert Budget(at_least=10_000).describe() == "≥ 10,000"


def test_a_whole_count_per_payment_is_judged_without_the_windows_edges() -> None:
    # Deposits in flight as the window opens and closes move the ratio by a few hundredths;
    # a fifth event per deposit would move it by one.
    events = Budget(at_most=4, whole=True)
    assert events.describe() == "≤ 4, rounded"
    assert events.passes(4.03, None)
    assert events.passes(3.97, None)
    assert not events.passes(4.6, None)
    assert not Budget(at_most=4).passes(4.03, None)


def test_the_table_renders_every_row() -> None:
    console = Console(width=200, record=True)
    console.print(
        render(rows({"relay_events_per_s": 12_000.0, "raw_xadd_per_s": 60_000.0}), title="t")
    )
    text = console.export_text()
    assert "outbox relay" in text
    assert "12,000" in text
    assert "0.2000" in text
    assert "pass" in text


def test_json_has_null_for_a_figure_that_was_not_measured(tmp_path: Path) -> None:
    path = write_json(tmp_path / "out" / "r.json", {"figures": {"a": math.nan, "b": 1.5}})
    assert json.loads(path.read_text()) == {"figures": {"a": None, "b": 1.5}}

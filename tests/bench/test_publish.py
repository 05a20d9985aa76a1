from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from bench.context import BenchContext, BenchOptions
from bench.cost import Cost, Snapshot, between
from bench.harness import publish
from common.config import Settings


def test_the_report_prints_the_table_and_writes_json_and_png(tmp_path: Path) -> None:
    ctx = BenchContext(settings=Settings(), options=BenchOptions(output_dir=tmp_path), run_id="r")
    ctx.figures.update({"health_calls_per_s": 100.0, "deposits_completed_per_s": math.nan})
    console = Console(record=True, width=200)

    outcome = publish(
        ctx, ["lost money"], console, started_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), mode="t"
    )

    assert not outcome.ok
    assert outcome.json_path == tmp_path / "20260102T030405Z.json"
    document = json.loads(outcome.json_path.read_text())
    assert document["figures"] == {"health_calls_per_s": 100.0, "deposits_completed_per_s": None}
    assert document["money_check_passed"] is False
    assert isinstance(document["git_commit"], str)
    assert outcome.png_path.read_bytes()[:4] == b"\x89PNG"
    text = console.export_text()
    assert "MONEY CHECK FAILED: lost money" in text
    assert "deposits completed, closed loop" in text


def test_the_cost_table_comes_first_and_the_cost_goes_into_the_json(tmp_path: Path) -> None:
    a = Snapshot(wall=0.0, clock=0.0, cpu_ticks={"payment": 0}, transactions={"payments": (0, 0)})
    b = Snapshot(
        wall=2.0, clock=2.0, cpu_ticks={"payment": 300}, transactions={"payments": (60, 6)}
    )
    ctx = BenchContext(settings=Settings(), options=BenchOptions(output_dir=tmp_path), run_id="r")
    ctx.figures["complete_deposits_per_s"] = 15.0
    ctx.costs["deposit"] = Cost("deposit", 30, between(a, b, ticks_per_s=100))
    console = Console(record=True, width=200)

    outcome = publish(
        ctx, [], console, started_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), mode="t"
    )

    text = console.export_text()
    assert text.index("cost per completed payment") < text.index("deposits completed, complete")
    document = json.loads(outcome.json_path.read_text())
    deposit = document["cost"]["deposit"]
    assert deposit["completed_in_cost_window"] == 30
    assert deposit["per_payment"]["cpu_ms.payment"] == 100.0
    assert deposit["per_payment"]["transactions.payments"] == 2.2
    assert deposit["statement_window_s"] is None  # statements were not counted

"""The run's output from a small recorded history: tables, a JSON document and a PNG."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from chaos import report
from chaos.checker import check
from chaos.observe import Backlog
from tests.chaos.test_checker import consistent


def test_prints_writes_and_draws(tmp_path: Path) -> None:
    history, observed = consistent()
    results = check(history, observed, recovery_window_s=60)
    console = Console(record=True, width=150)
    samples = [Backlog(0.0, 1, 0, 0), Backlog(2.0, None, None, None), Backlog(4.0, 0, 0, 0)]

    report.print_all(console, history, observed, results, ["payment restarted"])
    doc = report.document(
        history, observed, results, meta={"seed": 7}, samples=samples, restarts=[]
    )
    json_path = report.write(tmp_path / "run.json", doc)
    png = report.draw(history, samples, path=tmp_path / "run.png", title="t", end=4.0)

    text = console.export_text()
    assert "payments by kind and final state" in text
    assert "kill:payment" in text
    assert json.loads(json_path.read_text())["passed"] is True
    assert doc["faults_by_kind"] == {"kill": 1}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

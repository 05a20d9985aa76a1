from __future__ import annotations

from pathlib import Path

from bench.charts import draw
from bench.context import Timeline


def test_draws_a_png(tmp_path: Path) -> None:
    timeline = Timeline(
        creates=[0.1, 0.5, 1.2],
        completions=[0.9, 1.5],
        latencies={"CreateDeposit (closed)": [0.01, 0.02, 0.03], "empty": []},
    )
    path = draw(timeline, start=0.0, path=tmp_path / "r" / "chart.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

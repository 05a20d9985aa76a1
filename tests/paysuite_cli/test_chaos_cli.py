"""`paysuite chaos` on a failed run: what it prints last is what a CI log keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import chaos.run
from chaos.checker import CheckResult
from chaos.nemesis import Planned
from chaos.run import Outcome
from paysuite_cli.main import app


def test_a_failed_run_ends_with_its_schedule_then_the_failed_checks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    outcome = Outcome(
        results=[
            CheckResult("liveness", ["took 71.0 s, the window is 60 s"], "71.0 s"),
            CheckResult("ledger verify", [], "paysuite ledger verify"),
            CheckResult(
                "every payment terminal", [f"deposit p{i}: pending, stuck" for i in range(9)]
            ),
        ],
        plan=[Planned(at=12.5, kind="kill", target="recovery", duration=0.0)],
        json_path=tmp_path / "run.json",
        png_path=tmp_path / "run.png",
    )

    def fake_run(*_: Any, **__: Any) -> Outcome:
        return outcome

    monkeypatch.setattr(chaos.run, "run", fake_run)
    result = CliRunner().invoke(app, ["chaos", "--seed", "16", "--output", str(tmp_path)])

    assert result.exit_code == 1
    tail = result.output.splitlines()
    schedule = next(i for i, line in enumerate(tail) if "kill:recovery" in line)
    after = "\n".join(tail[schedule:])
    assert "FAILED liveness: 71.0 s" in after
    assert "took 71.0 s, the window is 60 s" in after
    assert "ledger verify" not in after
    assert "deposit p4: pending, stuck" in after
    assert "deposit p5" not in after
    assert str(tmp_path / "run.json") in after

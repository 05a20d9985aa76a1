from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from paysuite_cli import bench as bench_cli
from paysuite_cli.main import app

runner = CliRunner()


def test_bench_against_no_running_suite_fails_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # structlog would keep writing to CliRunner's captured stderr, closed after the test.
    monkeypatch.setattr(bench_cli, "configure_logging", lambda **_kwargs: None)
    result = runner.invoke(
        app,
        ["bench", "--target-running", "--output", str(tmp_path)],
        env={
            "PAYSUITE_DATA_DIR": str(tmp_path),
            "PAYSUITE_DATABASE_URL": None,  # unset
            "PAYSUITE_REDIS_URL": None,
            "COLUMNS": "200",
        },
    )
    assert result.exit_code == 2
    assert "bench failed" in result.output
    assert "no suite is running" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_bench_refuses_a_bad_configuration(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["bench", "--quick"], env={"PAYSUITE_REDIS_URL": "http://x", "COLUMNS": "200"}
    )
    assert result.exit_code == 2
    assert "PAYSUITE_REDIS_URL" in result.output

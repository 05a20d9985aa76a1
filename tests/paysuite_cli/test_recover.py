"""`paysuite recover`: its one-line failures (the integration tests run it against a suite)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from paysuite_cli.main import app
from tests.tokens import TEST_AUTH_SECRET


def test_without_once_it_points_at_the_worker_and_exits_2() -> None:
    result = CliRunner().invoke(app, ["recover"])
    assert result.exit_code == 2
    assert "python -m recovery_worker" in result.output


def test_a_suite_that_is_not_running_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("PAYSUITE_DATABASE_URL", "PAYSUITE_REDIS_URL", "PAYSUITE_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)

    result = CliRunner().invoke(app, ["recover", "--once"])

    assert result.exit_code == 2
    assert "no suite is running" in result.output
    assert "Traceback" not in result.output


def test_a_redis_that_does_not_answer_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYSUITE_REDIS_URL", f"unix://{tmp_path}/nothing.sock")
    monkeypatch.setenv("PAYSUITE_AUTH_SECRET", TEST_AUTH_SECRET)

    result = CliRunner().invoke(app, ["recover", "--once"])

    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "paysuite recover: Redis does not answer: is the suite running?"
    ]

"""`paysuite review ...` without a running suite, and its argument handling."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from common.ports import free_port
from paysuite_cli.credentials import operator_name
from paysuite_cli.main import app, run
from tests.tokens import TEST_AUTH_SECRET


def unused_target() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest.mark.parametrize(
    "args",
    [
        ["review", "list"],
        ["review", "show", "0b7d4d1e-55f4-4c43-8c3e-2a51f3c1d6a1"],
        ["review", "resolve", "0b7d4d1e-55f4-4c43-8c3e-2a51f3c1d6a1", "--as", "failed",
         "--note", "n"],
    ],
)  # fmt: skip
def test_a_payment_service_that_is_not_running_is_one_line_and_exit_1(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PAYSUITE_PAYMENT_TARGET", unused_target())
    monkeypatch.setenv("PAYSUITE_AUTH_SECRET", TEST_AUTH_SECRET)
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setattr("sys.argv", ["paysuite", *args])
    with pytest.raises(SystemExit) as exited:
        run()
    assert exited.value.code == 1
    output = capsys.readouterr().out
    assert output.startswith("UNAVAILABLE")
    assert len(output.strip().splitlines()) == 1
    assert "Traceback" not in output


def test_a_resolution_other_than_the_three_is_a_usage_error() -> None:
    result = CliRunner().invoke(
        app, ["review", "resolve", "c", "--as", "maybe", "--note", "n"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 2
    assert "maybe" in result.output


def test_a_resolution_needs_a_note() -> None:
    result = CliRunner().invoke(app, ["review", "resolve", "c", "--as", "failed"])
    assert result.exit_code == 2


def test_the_operator_defaults_to_the_login_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGNAME", "dana")
    assert operator_name() == "operator:dana"
    assert operator_name("sam") == "operator:sam"

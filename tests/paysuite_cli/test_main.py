import pytest
from typer.testing import CliRunner

from paysuite_cli.main import app, run


def test_version_is_printed_and_exits_zero() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("paysuite ")


def test_a_suite_that_is_not_running_is_one_line_and_exit_2(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(str(tmp_path))
    for name in ("PAYSUITE_DATABASE_URL", "PAYSUITE_REDIS_URL", "PAYSUITE_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("sys.argv", ["paysuite", "events", "tail", "payment"])
    with pytest.raises(SystemExit) as exited:
        run()
    assert exited.value.code == 2
    output = capsys.readouterr().out
    assert "no suite is running" in output
    assert "Traceback" not in output

from typer.testing import CliRunner

from paysuite_cli.main import app


def test_version_is_printed_and_exits_zero() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("paysuite ")

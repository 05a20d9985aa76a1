"""Every `paysuite` command with no suite running: exit code 2 and one line saying so, never a
traceback. (The same commands against a running suite with a bad id: tests/integration/cli/
test_up.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from paysuite_cli.main import app

COMMANDS = [
    ["demo"],
    ["payments", "get", "7d1c1a9e-2c43-4b8e-9d55-0a3c1f0e6b11"],
    ["payments", "events", "7d1c1a9e-2c43-4b8e-9d55-0a3c1f0e6b11"],
    ["payments", "watch", "7d1c1a9e-2c43-4b8e-9d55-0a3c1f0e6b11"],
    ["events", "tail", "payment"],
    ["events", "pending"],
    ["events", "dlq", "list", "payment"],
    ["events", "dlq", "replay", "payment", "--all"],
    ["events", "dlq", "drop", "payment", "1-1"],
    ["outbox", "status"],
    ["providers"],
    ["sim", "show", "sim-primary"],
    ["sim", "set", "sim-primary", "outage=true"],
    ["wallet", "rebuild-projections"],
    ["wallet", "expire-holds"],
    ["ledger", "verify"],
    ["fx", "set", "USD", "EUR", "0.9"],
    ["recover", "--once"],
    ["bench", "--target-running"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_with_no_suite_running_every_command_says_so_in_one_line_and_exits_2(
    args: list[str], tmp_path: Path
) -> None:
    env = {
        "PAYSUITE_DATA_DIR": str(tmp_path),
        "PAYSUITE_DATABASE_URL": None,  # unset
        "PAYSUITE_REDIS_URL": None,
        "COLUMNS": "300",
    }
    result = CliRunner().invoke(app, args, env=env)

    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "no suite is running" in result.output
    assert result.output.count("\n") == 1, result.output


def test_the_exit_codes_are_in_the_help() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert "Exit codes: 0 done; 1 the suite refused" in result.output

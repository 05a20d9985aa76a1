"""The session-end check finds a process a test left behind, and not one of before the run.

Only the sleeper each test starts is looked at and stopped: the run's own servers are
descendants of this process too, and are the run's until its end."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import psutil

from tests import survivors


def _orphan(folder: Path) -> str:
    """A process in `folder` orphaned at once (its parent exits), as a server is whose
    supervisor was SIGKILLed: no descendant of the test process. Returns its marker."""
    marker = f"sleeper-{uuid.uuid4().hex}"
    sleeper = [sys.executable, "-c", f"import time; time.sleep(60)  # {marker}"]
    spawn = f"import subprocess; subprocess.Popen({sleeper!r}, cwd={str(folder)!r})"
    subprocess.run([sys.executable, "-c", spawn], check=True)
    return marker


def _the_sleeper(found: list[psutil.Process], marker: str) -> list[psutil.Process]:
    return [p for p in found if marker in survivors.describe(p)]


def test_a_process_left_in_a_folder_of_the_run_is_found_even_once_orphaned(
    tmp_path: Path,
) -> None:
    before = survivors.snapshot()
    marker = _orphan(tmp_path)
    sleeper = _the_sleeper(survivors.survivors(before, [tmp_path], grace_s=0.1), marker)
    try:
        assert len(sleeper) == 1
    finally:
        survivors.kill(sleeper)
    assert _the_sleeper(survivors.survivors(before, [tmp_path], grace_s=0.1), marker) == []


def test_a_process_that_ran_before_the_run_began_is_not_the_runs(tmp_path: Path) -> None:
    marker = _orphan(tmp_path)
    everything = survivors.snapshot()
    sleeper = _the_sleeper(survivors.survivors(set(), [tmp_path], grace_s=0.1), marker)
    try:
        assert len(sleeper) == 1
        found = survivors.survivors(everything, [tmp_path], grace_s=0.1)
        assert _the_sleeper(found, marker) == []
    finally:
        survivors.kill(sleeper)

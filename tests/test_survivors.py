"""The session-end check finds a process a test left behind, and not the machine's own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests import survivors

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def _orphan(folder: Path) -> None:
    """A process in `folder` orphaned at once (its parent exits), as a server is whose
    supervisor was SIGKILLed: no descendant of the test process."""
    spawn = f"import subprocess; subprocess.Popen({SLEEPER!r}, cwd={str(folder)!r})"
    subprocess.run([sys.executable, "-c", spawn], check=True)


def test_a_process_left_in_a_folder_of_the_run_is_found_even_once_orphaned(
    tmp_path: Path,
) -> None:
    before = survivors.snapshot()
    _orphan(tmp_path)
    left = survivors.survivors(before, [tmp_path], grace_s=0.1)
    try:
        assert len(left) == 1
        assert "time.sleep(60)" in survivors.describe(left[0])
    finally:
        survivors.kill(left)
    assert survivors.survivors(before, [tmp_path], grace_s=0.1) == []


def test_a_process_that_ran_before_the_run_began_is_not_the_runs(tmp_path: Path) -> None:
    _orphan(tmp_path)
    everything = survivors.snapshot()
    started_before = survivors.survivors(set(), [tmp_path], grace_s=0.1)
    try:
        assert len(started_before) == 1
        assert survivors.survivors(everything, [tmp_path], grace_s=0.1) == []
    finally:
        survivors.kill(started_before)

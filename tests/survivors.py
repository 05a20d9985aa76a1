"""No process the tests start outlives them: the session-end check of tests/conftest.py.

A process is this run's when it did not exist when the run began and it is either still a
descendant of the test process, or it runs in or names a folder of this run (every temporary
folder the tests make is under one folder of the run's own, see `session_folder`): an embedded
PostgreSQL left by a SIGKILLed supervisor is re-parented to init but keeps its data folder in
its arguments and as its working directory. Servers already on the machine (a PostgreSQL on
5432, a Redis on 6379, another engineer's test run) are neither.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import psutil

# Processes stopping when the run ends (a watchdog stopping its servers) get this long.
GRACE_S = 10.0


def session_folder() -> Path:
    """A folder of this run's own under the system's temporary folder, made the default for
    every temporary folder made in this process. Readable by all: as root, pgserver runs
    PostgreSQL as an unprivileged user, which must reach its data folder."""
    folder = Path(tempfile.mkdtemp(prefix="paysuite-tests-"))
    folder.chmod(0o755)
    tempfile.tempdir = str(folder)
    return folder


def snapshot() -> set[tuple[int, float]]:
    """Every process running now, by pid and start time (a pid alone may be reused)."""
    return {(p.pid, p.info["create_time"]) for p in psutil.process_iter(["create_time"])}


def survivors(
    before: set[tuple[int, float]], folders: list[Path], grace_s: float = GRACE_S
) -> list[psutil.Process]:
    """This run's processes still running after `grace_s`."""
    me = psutil.Process()
    candidates = {p.pid: p for p in me.children(recursive=True)}
    for process in psutil.process_iter(["create_time"]):
        if (process.pid, process.info["create_time"]) not in before and _in(process, folders):
            candidates.setdefault(process.pid, process)
    candidates.pop(me.pid, None)
    return _still_running(list(candidates.values()), grace_s)


def _still_running(processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Those still running after up to `timeout_s` (polled: psutil's wait_procs would wait for
    a zombie that no init reaps, as in some containers)."""
    deadline = time.monotonic() + timeout_s
    while True:
        running = [p for p in processes if _running(p)]
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.1)


def _in(process: psutil.Process, folders: list[Path]) -> bool:
    try:
        texts = [*process.cmdline(), process.cwd()]
    except psutil.Error:  # gone meanwhile, or not ours to read
        return False
    return any(str(folder) in text for folder in folders for text in texts)


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def describe(process: psutil.Process) -> str:
    try:
        return f"pid {process.pid}: {' '.join(process.cmdline())[:200]}"
    except psutil.Error:
        return f"pid {process.pid}"


def kill(processes: list[psutil.Process]) -> None:
    for process in processes:
        try:
            process.kill()
        except psutil.Error:
            continue
    _still_running(processes, timeout_s=5)

"""Each chaos child's log, kept in the run folder for a maintainer to read when a run goes
wrong, while the run's output still shows only the children's errors, as before.

A child started by `spawner` writes its stdout and stderr into a pipe; a thread of ours copies
every line into `<folder>/<short name>.log` (appended across restarts, each start marked) and
passes on to our stderr the lines logged at ERROR or above, with what follows them (a
traceback), and any line that carries no level (a crash's traceback, Python's own warnings).
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from devstack import supervisor

# What the children log at. INFO did not slow a run measurably (seed 102, 60 s: the same
# throughput and liveness as at ERROR) and says what each step did.
LEVEL = "INFO"
# The levels whose lines stay out of the run's output (structlog's console renderer writes
# "<time> [info     ] ...", the standard library's handler "INFO <logger> ...").
QUIET = frozenset({"debug", "info", "warning", "warn"})
_LEVEL = re.compile(
    r"^(?:\S+ \[(?P<structlog>[a-z]+)\s*\]|(?P<stdlib>DEBUG|INFO|WARNING|ERROR|CRITICAL) )"
)

Spawner = Callable[[supervisor.Process, dict[str, str]], "subprocess.Popen[bytes]"]


def level_of(line: str) -> str | None:
    """The level a log line starts with, lower case; None for a continuation or a bare line."""
    found = _LEVEL.match(line)
    if found is None:
        return None
    return (found["structlog"] or found["stdlib"]).lower()


def tee(lines: Iterable[bytes], log: IO[str], console: IO[str]) -> None:
    """Every line into `log`; the loud ones (see the module) also to `console`."""
    loud = True
    for raw in lines:
        line = raw.decode("utf-8", errors="replace")
        log.write(line)
        level = level_of(line)
        if level is not None:
            loud = level not in QUIET
        if loud:
            console.write(line)
            console.flush()
    log.flush()


def spawner(folder: Path, name_of: Callable[[supervisor.Process], str]) -> Spawner:
    """`supervisor.spawn`, with the child's output kept in `folder/<name_of(proc)>.log`."""
    folder.mkdir(parents=True, exist_ok=True)

    def spawn(proc: supervisor.Process, env: dict[str, str]) -> subprocess.Popen[bytes]:
        popen = supervisor.spawn(proc, env, output=subprocess.PIPE)
        assert popen.stdout is not None  # asked for a pipe
        log = (folder / f"{name_of(proc)}.log").open("a", encoding="utf-8", buffering=1)
        log.write(f"--- {datetime.now(UTC).isoformat()} started {proc.name}, pid {popen.pid}\n")
        thread = threading.Thread(
            target=_copy,
            args=(popen.stdout, log),
            name=f"chaos log: {proc.name}",
            daemon=True,
        )
        thread.start()
        return popen

    return spawn


def _copy(pipe: IO[bytes], log: IO[str]) -> None:
    try:
        tee(iter(pipe.readline, b""), log, sys.stderr)
    finally:
        log.close()
        pipe.close()

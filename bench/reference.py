"""How fast this machine runs right now: a fixed unit of Python work, timed every 50 ms in a
process of its own beside the suite.

On a shared machine the same work costs more CPU time while neighbours load the host, so the
suite's CPU per payment moves with the weather (10.2 to 16.8 ms per deposit over six runs of
unchanged code). The unit below does the same work every time, so its CPU time moves with the
weather alone: the suite's CPU divided by it compares runs. Unlike the load client's CPU, it
does not depend on what the suite does (the client's reads batch with the events' timing).

The process writes `units cpu_ns` (both cumulative) to a file after every unit, replacing it
whole, and the cost meter reads it at each end of a window.

    python -m bench.reference PATH
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

PERIOD_S = 0.05
# A mix of what a service's Python does (dicts, strings, JSON, hashing), about a millisecond.
ROUNDS = 400


def unit_of_work() -> int:
    table: dict[str, int] = {}
    size = 0
    for i in range(ROUNDS):
        key = f"k{i % 61}"
        table[key] = table.get(key, 0) + i
        size += len(json.dumps({"i": i, "key": key, "seen": table[key]}))
    digest = hashlib.sha256(json.dumps(table, sort_keys=True).encode()).hexdigest()
    return size + len(digest)


def run(path: Path) -> None:
    units, cpu_ns = 0, 0
    scratch = path.with_suffix(".tmp")
    while True:
        started = time.thread_time_ns()
        unit_of_work()
        cpu_ns += time.thread_time_ns() - started
        units += 1
        scratch.write_text(f"{units} {cpu_ns}")
        os.replace(scratch, path)
        time.sleep(PERIOD_S)


def read(path: Path) -> tuple[int, int]:
    """(units done, their CPU ns) so far; (0, 0) before the first."""
    try:
        units, cpu_ns = path.read_text().split()
    except (FileNotFoundError, ValueError):
        return 0, 0
    return int(units), int(cpu_ns)


@contextlib.contextmanager
def running(folder: Path) -> Iterator[Callable[[], tuple[int, int]]]:
    """The reference process, for a bench run; yields its reader."""
    path = folder / "reference"
    child = subprocess.Popen(  # noqa: S603 - this interpreter, this module
        [sys.executable, "-m", "bench.reference", str(path)]
    )
    try:
        yield lambda: read(path)
    finally:
        child.terminate()
        child.wait(timeout=10)


if __name__ == "__main__":
    run(Path(sys.argv[1]))

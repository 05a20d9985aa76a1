"""CPU time of processes from Linux's /proc: what a process and its descendants have spent.

`/proc/PID/stat` holds a process's user and system time (every thread) and, in cutime and
cstime, that of its children it has already waited for. So the CPU of a process tree up to now
is, over every live member, utime + stime + cutime + cstime: a child that exits between two
readings moves from "live member" to its parent's cutime with its whole lifetime's time, and
the difference of two readings stays exact. That is how PostgreSQL is counted: the postmaster
and its backends, including those that came and went during the window.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


def ticks_per_second() -> int:
    """The unit of /proc's times (USER_HZ, 100 on Linux)."""
    return os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    ppid: int
    utime: int  # clock ticks, every thread
    stime: int
    cutime: int  # children it has waited for
    cstime: int

    @property
    def own(self) -> int:
        return self.utime + self.stime

    @property
    def with_reaped(self) -> int:
        return self.utime + self.stime + self.cutime + self.cstime


def parse_stat(text: str) -> ProcStat:
    """One /proc/PID/stat line. The command name (field 2) is in parentheses and may itself
    hold spaces and parentheses, so the fields are counted from the last ')'."""
    head, _, tail = text.rpartition(")")
    pid = int(head.split("(", 1)[0])
    fields = tail.split()
    # After the name: state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17).
    return ProcStat(
        pid=pid,
        ppid=int(fields[1]),
        utime=int(fields[11]),
        stime=int(fields[12]),
        cutime=int(fields[13]),
        cstime=int(fields[14]),
    )


def read_all(proc: Path = PROC) -> dict[int, ProcStat]:
    """Every process's stat; one that exits while the folder is read is left out."""
    stats: dict[int, ProcStat] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stats[int(entry.name)] = parse_stat((entry / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not a process we can read
    return stats


def tree_ticks(root: int, stats: Mapping[int, ProcStat]) -> int:
    """CPU ticks spent by `root` and every descendant, live or reaped (0 if root is gone)."""
    if root not in stats:
        return 0
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    total = 0
    todo = [root]
    while todo:
        pid = todo.pop()
        total += stats[pid].with_reaped
        todo.extend(children.get(pid, ()))
    return total


def cpu_ticks(
    trees: Mapping[str, Iterable[int]], own: Iterable[tuple[str, int]] = (), proc: Path = PROC
) -> dict[str, int]:
    """Ticks by name: each of `trees`' roots counted with its descendants, the roots of one
    name summed (a service's replicas); `own` alone (the bench's own process is the parent of
    the suite's processes, and must not be charged for them)."""
    stats = read_all(proc)
    found = {name: sum(tree_ticks(pid, stats) for pid in pids) for name, pids in trees.items()}
    for name, pid in own:
        found[name] = stats[pid].own if pid in stats else 0
    return found

from __future__ import annotations

import os
from pathlib import Path

from bench.proc import ProcStat, cpu_ticks, parse_stat, read_all, tree_ticks


def _stat(pid: int, ppid: int, utime: int, stime: int, cutime: int = 0, cstime: int = 0) -> str:
    # Fields 3..17 of /proc/PID/stat: state, ppid, pgrp, session, tty, tpgid, flags, minflt,
    # cminflt, majflt, cmajflt, utime, stime, cutime, cstime; then the rest.
    rest = f"S {ppid} 1 1 0 -1 4194560 100 0 0 0 {utime} {stime} {cutime} {cstime} 20 0 1 0"
    return f"{pid} (postgres: wallets) {rest} 12345 0\n"


def test_the_fields_are_counted_after_the_last_parenthesis() -> None:
    text = "42 (a (weird) name) R 7 1 1 0 -1 0 0 0 0 0 11 22 33 44 20 0 1 0 5 6"
    assert parse_stat(text) == ProcStat(pid=42, ppid=7, utime=11, stime=22, cutime=33, cstime=44)


def test_a_tree_counts_live_descendants_and_reaped_children() -> None:
    stats = {
        10: ProcStat(10, 1, utime=5, stime=1, cutime=100, cstime=20),  # postmaster
        11: ProcStat(11, 10, utime=7, stime=3, cutime=0, cstime=0),  # a backend
        12: ProcStat(12, 11, utime=1, stime=1, cutime=0, cstime=0),  # its child
        20: ProcStat(20, 1, utime=999, stime=999, cutime=0, cstime=0),  # unrelated
    }
    assert tree_ticks(10, stats) == 6 + 120 + 10 + 2
    assert tree_ticks(11, stats) == 12
    assert tree_ticks(99, stats) == 0


def test_a_backend_that_exits_between_readings_is_still_counted_once() -> None:
    before = {10: ProcStat(10, 1, 5, 0, 0, 0), 11: ProcStat(11, 10, 30, 10, 0, 0)}
    # The backend spent 8 more ticks, exited and was reaped: all 48 moved to the cutime/cstime.
    after = {10: ProcStat(10, 1, 6, 0, 38, 10)}
    assert tree_ticks(10, after) - tree_ticks(10, before) == 1 + 8


def test_a_fake_proc_folder_is_read_and_own_processes_exclude_their_children(
    tmp_path: Path,
) -> None:
    for pid, text in {
        100: _stat(100, 1, 50, 10),  # the bench itself, parent of the services
        101: _stat(101, 100, 20, 5),  # payment service
        102: _stat(102, 100, 7, 3),  # Redis
        104: _stat(104, 100, 30, 2),  # a second wallet replica
        105: _stat(105, 100, 1, 1),  # the first
    }.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(text)
    (tmp_path / "self").mkdir()  # not a pid: skipped
    (tmp_path / "103").mkdir()  # exited while the folder was listed: skipped

    assert sorted(read_all(tmp_path)) == [100, 101, 102, 104, 105]
    trees = {"payment": [101], "Redis": [102], "wallet": [105, 104]}
    ticks = cpu_ticks(trees, [("load client", 100)], tmp_path)
    # The wallet's two replicas add up under its name.
    assert ticks == {"payment": 25, "Redis": 10, "wallet": 34, "load client": 60}


def test_this_process_has_spent_some_cpu() -> None:
    ticks = cpu_ticks({}, [("me", os.getpid())])
    sum(i * i for i in range(200_000))  # something to count
    assert cpu_ticks({}, [("me", os.getpid())])["me"] >= ticks["me"]

"""The reference work: the same every time, and a process that reports how much it did."""

from __future__ import annotations

import math
import time
from pathlib import Path

from bench import reference
from bench.cost import Snapshot, between


def test_the_unit_of_work_does_the_same_work_every_time() -> None:
    assert len({reference.unit_of_work() for _ in range(3)}) == 1


def test_nothing_read_before_the_first_unit(tmp_path: Path) -> None:
    assert reference.read(tmp_path / "reference") == (0, 0)


def test_the_process_reports_units_and_their_cpu_as_it_goes(tmp_path: Path) -> None:
    with reference.running(tmp_path) as read:
        deadline = time.monotonic() + 10
        while read()[0] < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        units, cpu_ns = read()
    assert units >= 3
    assert 0 < cpu_ns / units < 100_000_000  # well under the 50 ms between units


def test_a_window_without_reference_units_has_no_unit() -> None:
    usage = between(Snapshot(0.0, 0.0), Snapshot(1.0, 1.0), ticks_per_s=100)
    assert math.isnan(usage.reference_ms)  # no unit ran in the window

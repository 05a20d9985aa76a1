"""Each child's log kept whole in the run folder; only its errors on the run's output."""

from __future__ import annotations

import io
import time
from pathlib import Path

from chaos import logs
from devstack.supervisor import Process

STRUCTLOG_INFO = b"2026-12-06T04:40:47.229432Z [info     ] payment.initiated  payment_id=p1\n"
STRUCTLOG_WARNING = b"2026-12-06T04:40:47.229432Z [warning  ] stream.retry_later error=x\n"
STRUCTLOG_ERROR = b"2026-12-06T04:40:47.229432Z [error    ] stream.poison      failures=10\n"
STDLIB_WARNING = b"WARNING asyncio Task was destroyed but it is pending!\n"
STDLIB_ERROR = b"ERROR grpc._cython.cygrpc something broke\n"


def test_the_level_of_a_line_from_either_renderer() -> None:
    assert logs.level_of(STRUCTLOG_INFO.decode()) == "info"
    assert logs.level_of(STRUCTLOG_ERROR.decode()) == "error"
    assert logs.level_of(STDLIB_WARNING.decode()) == "warning"
    assert logs.level_of("Traceback (most recent call last):\n") is None
    assert logs.level_of("    raise ValueError(x)\n") is None


def test_every_line_is_logged_and_only_errors_and_what_follows_them_reach_the_console() -> None:
    lines = [
        STRUCTLOG_INFO,
        STRUCTLOG_WARNING,
        STRUCTLOG_ERROR,
        b"Traceback (most recent call last):\n",  # the error's traceback
        STDLIB_WARNING,
        b"  continued warning\n",
        STDLIB_ERROR,
    ]
    log, console = io.StringIO(), io.StringIO()

    logs.tee(lines, log, console)

    assert log.getvalue() == b"".join(lines).decode()
    assert (
        console.getvalue()
        == (STRUCTLOG_ERROR + b"Traceback (most recent call last):\n" + STDLIB_ERROR).decode()
    )


def test_output_before_any_level_reaches_the_console() -> None:
    """A child that dies before it configured logging prints a bare traceback."""
    console = io.StringIO()

    logs.tee([b"Traceback (most recent call last):\n", STRUCTLOG_INFO], io.StringIO(), console)

    assert console.getvalue() == "Traceback (most recent call last):\n"


def test_a_spawned_child_s_output_lands_in_its_log_across_restarts(tmp_path: Path) -> None:
    spawn = logs.spawner(tmp_path / "logs", lambda proc: "zen")
    proc = Process("the zen", "this", "127.0.0.1:1", "http")  # `python -m this` prints it

    for _ in range(2):
        assert spawn(proc, {}).wait(timeout=30) == 0

    path = tmp_path / "logs" / "zen.log"
    deadline = time.monotonic() + 10
    while path.read_text().count("Beautiful is better than ugly") < 2:  # copied by a thread
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert path.read_text().count("started the zen, pid") == 2

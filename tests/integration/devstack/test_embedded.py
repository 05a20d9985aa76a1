"""The embedded PostgreSQL and Redis never outlive their owner: a SIGKILLed owner's servers
stop within seconds (its watchdog), and servers left by an owner whose watchdog died too are
taken over by the next owner and stopped with it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from devstack.embedded import start_embedded

pytestmark = [pytest.mark.integration]

OWNER = """
import sys, time
from pathlib import Path
from devstack.embedded import start_embedded
start_embedded(Path(sys.argv[1]))
print("up", flush=True)
time.sleep(600)
"""


@pytest.fixture
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="embedded-"))
    path.chmod(0o755)  # as root, PostgreSQL runs as pgserver's own user
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _owner(folder: Path) -> subprocess.Popen[str]:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert owner.stdout is not None
    assert owner.stdout.readline() == "up\n"
    return owner


def _named(folder: Path, name: str) -> list[psutil.Process]:
    """Running processes whose arguments name `folder` and whose name or arguments `name`."""
    found = []
    for proc in psutil.process_iter():
        try:
            args = proc.cmdline()
            named = name in proc.name() or any(name in part for part in args)
            if named and any(str(folder) in part for part in args) and _alive(proc):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _alive(proc: psutil.Process) -> bool:
    """Running: not gone, and not a zombie no init reaps (as in some containers)."""
    try:
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _servers(folder: Path) -> list[psutil.Process]:
    return _named(folder, "postgres") + _named(folder, "redis-server")


def _gone_within(folder: Path, timeout_s: float) -> float:
    started = time.monotonic()
    while _servers(folder) or _named(folder, "embedded_watchdog"):
        assert time.monotonic() - started < timeout_s, [p.cmdline() for p in _servers(folder)]
        time.sleep(0.1)
    return time.monotonic() - started


@pytest.mark.timeout(90)
def test_a_sigkilled_owners_servers_stop_within_seconds(folder: Path) -> None:
    owner = _owner(folder)
    assert {p.name() for p in _servers(folder)} >= {"postgres", "redis-server"}
    owner.kill()
    owner.communicate()
    took = _gone_within(folder, timeout_s=10)
    print(f"servers and watchdog gone {took:.1f} s after the owner's SIGKILL")


@pytest.mark.timeout(90)
def test_servers_whose_owner_and_watchdog_died_are_taken_over_and_stopped(folder: Path) -> None:
    owner = _owner(folder)
    (watchdog,) = _named(folder, "embedded_watchdog")
    watchdog.kill()  # first: once the owner is gone, it would stop them at once
    while _alive(watchdog):
        time.sleep(0.01)
    owner.kill()
    owner.communicate()
    left = _servers(folder)
    assert {p.name() for p in left} >= {"postgres", "redis-server"}

    servers = start_embedded(folder)  # takes PostgreSQL over; replaces the leftover Redis
    try:
        assert not [p for p in left if p.name() == "redis-server" and _alive(p)]
    finally:
        servers.stop()
    _gone_within(folder, timeout_s=5)
    assert (folder / "postgres" / "PG_VERSION").exists()  # the data stays

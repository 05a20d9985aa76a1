"""Ports to hand to a process that binds them later: below the kernel's ephemeral range.

A port the kernel picks for a bind to port 0 comes from the ephemeral range, where every
outgoing connection on the machine also takes its local port: handed out, closed and bound
again later, it can be taken in between ("Address already in use"; seen in CI for a recovery
worker's metrics and in the tests' simulators). A port below that range is never taken by an
outgoing connection, so probing that it is free and binding it a moment later holds unless
another process picks the same port on purpose. Where a server can bind port 0 itself and
report the port it got, that is better still; this is for the rest (a child process's address
that others must know before it starts, addresses that depend on each other).
"""

from __future__ import annotations

import itertools
import secrets
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LINUX_EPHEMERAL_START = 32768  # the Linux default, and where the file is absent
LOWEST_PORT = 20000  # above the registered ports servers on a developer machine tend to use


def ephemeral_start(path: Path = EPHEMERAL_RANGE_FILE) -> int:
    """The first port of the kernel's ephemeral range."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return LINUX_EPHEMERAL_START


def below_ephemeral(path: Path = EPHEMERAL_RANGE_FILE) -> range:
    """The ports handed out here: from LOWEST_PORT up to the ephemeral range."""
    end = ephemeral_start(path)
    if end - LOWEST_PORT < 1000:
        raise RuntimeError(
            f"the ephemeral port range starts at {end} ({path}): too few ports below it"
        )
    return range(LOWEST_PORT, end)


def can_bind(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As a server binds: a port whose last connection lingers in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class _Ports:
    """One walk through the range per process, from a random start: two calls in one process
    never hand out the same port, and processes started at once rarely probe the same ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ports = range(0)
        self._walk: Iterator[int] = iter(())

    def next_free(self, host: str) -> int:
        with self._lock:
            if not self._ports:
                self._ports = below_ephemeral()
                start = secrets.randbelow(len(self._ports))
                self._walk = itertools.cycle([*self._ports[start:], *self._ports[:start]])
            for port in itertools.islice(self._walk, len(self._ports)):
                if can_bind(host, port):
                    return port
        raise RuntimeError(f"no free port on {host} in {self._ports}")


_PORTS = _Ports()


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` now, below the ephemeral range, for a server to bind soon."""
    return _PORTS.next_free(host)


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    return [free_port(host) for _ in range(count)]

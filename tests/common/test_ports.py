"""Ports handed out to be bound later come from below the kernel's ephemeral range."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from common.ports import (
    LINUX_EPHEMERAL_START,
    LOWEST_PORT,
    below_ephemeral,
    can_bind,
    ephemeral_start,
    free_port,
    free_ports,
)


def test_the_range_ends_where_the_kernels_ephemeral_range_starts(tmp_path: Path) -> None:
    range_file = tmp_path / "ip_local_port_range"
    range_file.write_text("40000\t60999\n")
    assert below_ephemeral(range_file) == range(LOWEST_PORT, 40000)
    assert ephemeral_start(tmp_path / "absent") == LINUX_EPHEMERAL_START
    range_file.write_text("20500 60999\n")
    with pytest.raises(RuntimeError, match="too few ports"):
        below_ephemeral(range_file)


def test_ports_are_distinct_free_and_below_the_ephemeral_range() -> None:
    ports = free_ports(50)
    assert len(set(ports)) == 50
    assert all(port in below_ephemeral() for port in ports)
    for port in ports[:5]:
        with socket.socket() as server:
            server.bind(("127.0.0.1", port))


def test_a_port_a_server_listens_on_is_not_free() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port()))
        taken.listen()
        assert not can_bind("127.0.0.1", taken.getsockname()[1])

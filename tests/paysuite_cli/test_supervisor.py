"""`paysuite up` refuses to share its data folder or its ports with a running suite."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from paysuite_cli.supervisor import AlreadyRunning, Process, check_ports_free, exclusive

HOLD_LOCK = """
import sys, time
from pathlib import Path
from paysuite_cli.supervisor import exclusive
with exclusive(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(30)
"""


def test_a_second_suite_on_the_same_data_folder_is_refused(tmp_path: Path) -> None:
    first = subprocess.Popen(  # another process, as a second `paysuite up` would meet
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert first.stdout is not None
        assert first.stdout.readline().strip() == "locked"
        with pytest.raises(AlreadyRunning, match=f"pid {first.pid}"), exclusive(tmp_path):
            pass
    finally:
        first.kill()
        first.communicate()
    with exclusive(tmp_path):  # free again once the holder is gone, however it ended
        pass


def test_a_port_already_taken_is_named_before_anything_starts() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        wallet = Process("wallet", "wallet_service", f"127.0.0.1:{port}", "grpc")
        with pytest.raises(AlreadyRunning, match=f"wallet \\(127.0.0.1:{port}\\)"):
            check_ports_free([wallet])

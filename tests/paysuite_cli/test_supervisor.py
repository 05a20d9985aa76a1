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


def test_the_suite_runs_the_recovery_worker_with_demo_timings_the_environment_overrides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from common.config import Settings
    from paysuite_cli.supervisor import plan

    monkeypatch.setenv("PAYSUITE_RECOVERY_INTERVAL_S", "42")
    worker = next(p for p in plan(Settings()) if p.module == "recovery_worker")

    assert worker.endpoint == "127.0.0.1:50054"
    assert dict(worker.env) == {
        "PAYSUITE_RECOVERY_PENDING_AFTER_S": "10",
        "PAYSUITE_RECOVERY_REFUNDING_AFTER_S": "60",
        "PAYSUITE_RECOVERY_STALLED_AFTER_S": "60",
    }

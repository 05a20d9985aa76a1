"""What every service process wires the same way: settings, logging, its database engine, a
Redis client, the outbox relay, readiness checks, and `python -m <service>` itself."""

from __future__ import annotations

import gc
import sys
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from redis.asyncio import Redis
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from common import aio, db
from common.config import ConfigError, Settings, load_settings
from common.grpc.server import ServiceRuntime, run_until_signalled
from common.logging import configure_logging
from common.metrics import metrics_for
from common.outbox import OutboxProgress, OutboxRelay
from common.streams import Handler, StreamConsumer
from common.supervision import Task
from common.tracing import configure_tracing


@dataclass(frozen=True, slots=True)
class ServiceDatabase:
    """A service's own database: its name on the shared server and its migrations."""

    name: str
    migrations: Path

    def url(self, settings: Settings) -> URL:
        return db.service_database_url(
            settings.require_database_url(), self.name, prefix=settings.database_prefix
        )

    def migrate(self, settings: Settings) -> None:
        db.migrate(self.url(settings), self.migrations)


# How long a loop whose every wait is bounded (a blocking read of a second, a poll, an RPC
# deadline) may go without finishing an iteration before it counts as stalled. Generous: a
# stall restarts the process, which a database pausing for a few seconds must not cause.
LOOP_HEARTBEAT_S = 60.0


@dataclass
class Infra:
    settings: Settings
    database_url: URL
    engine: AsyncEngine
    redis: Redis
    readers: list[AsyncEngine] = field(default_factory=list)

    @classmethod
    def connect(cls, settings: Settings, database: ServiceDatabase) -> Infra:
        url = database.url(settings)
        return cls(
            settings=settings,
            database_url=url,
            engine=db.create_engine(url, pool_size=settings.db_pool_size),
            redis=Redis.from_url(settings.require_redis_url()),
        )

    def relay_task(self, *, broadcast: Collection[str] = ()) -> Task:
        """The outbox relay as a supervised task: each round is bounded by a statement or a
        Redis round trip, so a minute without one is a stall. `broadcast`: the streams it
        writes that are read without a consumer group (`OutboxRelay`)."""
        return Task(
            "outbox relay", self.relay(broadcast=broadcast).run, heartbeat_s=LOOP_HEARTBEAT_S
        )

    def consumer_task(self, consumer: StreamConsumer) -> Task:
        return Task(f"consumer {consumer.group}", consumer.run, heartbeat_s=LOOP_HEARTBEAT_S)

    def relay(self, *, broadcast: Collection[str] = ()) -> OutboxRelay:
        return OutboxRelay(
            self.engine,
            self.redis,
            batch_size=self.settings.relay_batch_size,
            poll_interval_s=self.settings.relay_poll_interval_ms / 1000,
            linger_s=self.settings.relay_linger_ms / 1000,
            stream_prefix=self.settings.stream_prefix,
            retention=timedelta(seconds=self.settings.outbox_retention_s),
            stream_retention=timedelta(seconds=self.settings.stream_retention_s),
            broadcast=broadcast,
        )

    def consumer(
        self,
        *,
        stream: str,
        group: str,
        handler: Handler,
        handles: Callable[[str], bool] | None = None,
    ) -> StreamConsumer:
        return StreamConsumer(
            self.redis,
            stream=self.settings.stream_prefix + stream,
            group=group,
            handler=handler,
            block_ms=self.settings.consumer_block_ms,
            claim_idle_ms=self.settings.consumer_claim_idle_ms,
            max_deliveries=self.settings.consumer_max_deliveries,
            concurrency=self.settings.consumer_concurrency,
            name=self.settings.replica_name or None,
            handles=handles,
        )

    def outbox_progress(self) -> OutboxProgress:
        return OutboxProgress(self.engine, stalled_after_s=self.settings.outbox_stalled_after_s)

    async def ping_database(self) -> None:
        await db.ping(self.engine)

    async def ping_redis(self) -> None:
        await self.redis.ping()

    def reader(self, *, pool_size: int) -> AsyncEngine:
        """A small read-only engine on the service's database for its lone reads (autocommit:
        one statement each; see common.db.create_engine), disposed of with the rest."""
        engine = db.create_engine(self.database_url, pool_size=pool_size, read_only=True)
        self.readers.append(engine)
        return engine

    async def close(self) -> None:
        await self.redis.aclose()
        await self.engine.dispose()
        for reader in self.readers:
            await reader.dispose()


Builder = Callable[[Settings, str], Awaitable[ServiceRuntime]]

# The cyclic collector's first-generation threshold, up from CPython's 700: a request
# allocates hundreds of container objects (protobuf wrappers, futures, dicts), so at 700 the
# collector ran every few requests and promoted short-lived objects into older generations.
GC_YOUNG_THRESHOLD = 10_000


def settle_heap() -> None:
    """Moves what start-up built (modules, classes, the wired service: over 100,000 objects,
    alive until exit) out of the collector's sight, so a full collection no longer walks it,
    and collects less often. Measured on the wallet under postings: the collector took about
    8 % of its CPU before, about 1 % after."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def serve_main(
    name: str,
    build: Builder,
    listen: Callable[[Settings], str],
    *,
    needs_database: bool = True,
) -> None:
    """The body of `python -m <service>`: validated settings, then serve until signalled.
    `needs_database=False` for a process with no database of its own (the recovery worker)."""
    try:
        settings = load_settings()
        if needs_database:
            settings.require_database_url()
        settings.require_redis_url()
    except ConfigError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(level=settings.log_level, fmt=settings.log_format, service=name)
    configure_tracing(service=name, otlp_endpoint=settings.otlp_endpoint)

    async def main() -> None:
        runtime = await build(settings, listen(settings))
        settle_heap()
        await run_until_signalled(runtime, grace=settings.shutdown_grace_s)

    with metrics_for(name, settings.metrics_port, settings.metrics_host):
        try:
            aio.run(main())
        except ConfigError as exc:  # a setting only a service's build can check
            print(f"{name}: {exc}", file=sys.stderr)
            raise SystemExit(2) from None

"""PostgreSQL plumbing: one database per service on a shared server, async engines, migrations.

The configured URL names a server; each service appends its own database name (plus the
optional test prefix). Migrations use Alembic with a synchronous psycopg connection; the
services use the same driver in asyncio mode.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy.exc
import structlog
from alembic import command
from alembic.config import Config
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util import greenlet_spawn

from common.errors import ConcurrentUpdate, DependencyUnavailable

log = structlog.get_logger(__name__)


def service_database_url(server_url: str, name: str, *, prefix: str = "") -> URL:
    return make_url(server_url).set(drivername="postgresql+psycopg", database=f"{prefix}{name}")


def libpq_dsn(url: URL) -> str:
    """The same URL for plain psycopg (LISTEN/NOTIFY, CREATE DATABASE)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def create_engine(
    url: URL, *, pool_size: int = 10, pool_timeout_s: float = 30.0, read_only: bool = False
) -> AsyncEngine:
    # No pool_pre_ping: it costs a round trip per checkout on the hot path, and a connection
    # that died meanwhile fails its first statement, which database_boundary turns into
    # DependencyUnavailable (retried by the caller) while the pool discards the connection.
    # A burst may take half as many again; waiting for a connection (up to pool_timeout_s,
    # within the caller's deadline) is better than failing the request. Three services at
    # the default size stay well inside PostgreSQL's default 100 connections.
    # A read-only engine's statements run in autocommit (a lone read needs no BEGIN and
    # COMMIT: two statements and round trips) on sessions the server keeps read-only, so a
    # write through it fails instead of committing on its own.
    # A statement is prepared at its second run on a connection, not its sixth (psycopg's
    # default): every ROLLBACK makes psycopg deallocate all of the connection's prepared
    # statements, and until each hot statement had run five times more there, PostgreSQL
    # parsed and planned it again each time (measured: a third of the statements of a
    # deposit). The pool hands out the connection used last (LIFO), so the hot statements
    # stay prepared on a few connections instead of being counted up on every one in turn.
    connect_args: dict[str, Any] = {"prepare_threshold": 1}
    extra: dict[str, Any] = {}
    if read_only:
        connect_args["options"] = "-c default_transaction_read_only=on"
        extra["isolation_level"] = "AUTOCOMMIT"
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size // 2,
        pool_timeout=pool_timeout_s,
        pool_recycle=1800,
        pool_use_lifo=True,
        connect_args=connect_args,
        **extra,
    )


def ensure_database(url: URL) -> None:
    """Creates the service's database if it is missing; safe when several replicas race."""
    maintenance = libpq_dsn(url.set(database="postgres"))
    with psycopg.connect(maintenance, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (url.database,)
        ).fetchone()
        if exists:
            return
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(url.database))))
            log.info("database.created", database=url.database)
        except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
            pass


def migrate(url: URL, script_location: Path) -> None:
    """Creates the database if needed and upgrades it to the newest migration."""
    ensure_database(url)
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.attributes["url"] = url
    command.upgrade(config, "head")
    log.info("database.migrated", database=url.database)


def drop_database(url: URL) -> None:
    maintenance = libpq_dsn(url.set(database="postgres"))
    with psycopg.connect(maintenance, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(str(url.database))
            )
        )


async def ping(engine: AsyncEngine) -> None:
    async with database_boundary("ping"), engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


# What "the database is unreachable" looks like from SQLAlchemy and psycopg: the server went
# away (OperationalError, InterfaceError, a DBAPIError with connection_invalidated), the pool
# has no connection to give (sqlalchemy.exc.TimeoutError), or the socket itself failed.
_DATABASE_DOWN = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    ConnectionError,
    TimeoutError,
)


def is_database_down(exc: BaseException) -> bool:
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, _DATABASE_DOWN)


@contextlib.asynccontextmanager
async def database_boundary(what: str) -> AsyncIterator[None]:
    """Translates an unreachable database into DependencyUnavailable, once, at the adapter
    boundary: everything above waits and retries instead of failing a payment."""
    try:
        yield
    except Exception as exc:
        if is_database_down(exc):
            raise DependencyUnavailable(f"database unavailable during {what}") from exc
        raise


UNIQUE_VIOLATION = "23505"

# The driver connection under a SQLAlchemy connection, for the few hot statements that are
# plain SQL (see payment_service.adapters.repository for what it saves).
RawConnection = psycopg.AsyncConnection[Any]


async def driver_connection(conn: AsyncConnection | RawConnection) -> RawConnection:
    if isinstance(conn, psycopg.AsyncConnection):
        return conn
    raw = (await conn.get_raw_connection()).driver_connection
    assert isinstance(raw, psycopg.AsyncConnection)
    return raw


@contextlib.asynccontextmanager
async def unique_violation_is_conflict() -> AsyncIterator[None]:
    """A unique key taken by a concurrent transaction means we lost a race, not a bug: the
    caller's unit of work is retried (common.errors.retry_on_conflict) and then sees the row."""
    try:
        yield
    except sqlalchemy.exc.IntegrityError as exc:
        if getattr(exc.orig, "sqlstate", None) == UNIQUE_VIOLATION:
            raise ConcurrentUpdate("a concurrent request changed the same data") from exc
        raise
    except psycopg.errors.UniqueViolation as exc:
        raise ConcurrentUpdate("a concurrent request changed the same data") from exc


def begin_pooled(engine: Engine) -> tuple[Connection, RawConnection]:
    """A pooled connection, its transaction begun (which sends nothing: psycopg sends BEGIN
    with the first statement, and an autocommit engine none) and its driver connection, for
    `greenlet_spawn`: one pass through SQLAlchemy's greenlet bridge, where connect, begin and
    the driver connection as three awaits took three, at about 20 us each."""
    conn = engine.connect()
    try:
        conn.begin()
        raw = conn.connection.driver_connection
        assert isinstance(raw, psycopg.AsyncConnection)
    except BaseException:
        conn.close()
        raise
    return conn, raw


def _commit_and_close(conn: Connection) -> None:
    try:
        conn.commit()
    finally:
        conn.close()


@contextlib.asynccontextmanager
async def raw_transaction(engine: AsyncEngine) -> AsyncIterator[RawConnection]:
    """`engine.begin()` for plain SQL on the driver connection: committed when the block ends,
    rolled back (by closing) when it raises; two passes through the greenlet bridge instead of
    the five of `engine.begin()` and `driver_connection`."""
    conn, raw = await greenlet_spawn(begin_pooled, engine.sync_engine)
    try:
        yield raw
    except BaseException:
        await greenlet_spawn(conn.close)
        raise
    await greenlet_spawn(_commit_and_close, conn)

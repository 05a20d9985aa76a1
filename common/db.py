"""PostgreSQL plumbing: one database per service on a shared server, async engines, migrations.

The configured URL names a server; each service appends its own database name (plus the
optional test prefix). Migrations use Alembic with a synchronous psycopg connection; the
services use the same driver in asyncio mode.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import sqlalchemy.exc
import structlog
from alembic import command
from alembic.config import Config
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from common.errors import ConcurrentUpdate

log = structlog.get_logger(__name__)


def service_database_url(server_url: str, name: str, *, prefix: str = "") -> URL:
    return make_url(server_url).set(drivername="postgresql+psycopg", database=f"{prefix}{name}")


def libpq_dsn(url: URL) -> str:
    """The same URL for plain psycopg (LISTEN/NOTIFY, CREATE DATABASE)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def create_engine(url: URL, *, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, pool_recycle=1800
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
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


UNIQUE_VIOLATION = "23505"


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

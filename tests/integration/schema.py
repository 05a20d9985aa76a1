"""Schema drift: the differences between a migrated database and a service's SQLAlchemy
metadata, as Alembic's autogenerate sees them (tables, columns, types, nullability, server
defaults, indexes, unique and foreign keys). Usable for every service database."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, pool
from sqlalchemy.engine import URL

# Tables every service database has that no service's metadata describes: the outbox and the
# consumers' record are created by common.migrations; Alembic keeps its own version table.
SHARED_TABLES = frozenset({"outbox", "processed_events", "alembic_version"})


def _include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    table = obj if type_ == "table" else getattr(obj, "table", None)
    return getattr(table, "name", name) not in SHARED_TABLES


def schema_drift(url: URL, metadata: MetaData) -> list[Any]:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "compare_server_default": True,
                    "include_object": _include,
                },
            )
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()

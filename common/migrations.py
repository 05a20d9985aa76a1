"""Shared pieces of every service's Alembic environment and first migration.

Each service keeps its own `adapters/migrations/` folder (its own version history); its
`env.py` is a single call to `run_env()`.
"""

from __future__ import annotations

from alembic import context, op
from sqlalchemy import create_engine, pool

# The outbox and the consumers' processed-event record are the same in every service database.
OUTBOX_DDL = (
    """
    CREATE TABLE outbox (
        id BIGSERIAL PRIMARY KEY,
        event_id UUID NOT NULL UNIQUE,
        stream TEXT NOT NULL,
        event_type TEXT NOT NULL,
        aggregate_type TEXT NOT NULL,
        aggregate_id TEXT NOT NULL,
        aggregate_version BIGINT NOT NULL,
        envelope BYTEA NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        published_at TIMESTAMPTZ
    )
    """,
    # The relay only ever looks for unpublished rows: keep that index tiny.
    "CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL",
    """
    CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('paysuite_outbox', '');
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify()
    """,
    """
    CREATE TABLE processed_events (
        consumer TEXT NOT NULL,
        event_id UUID NOT NULL,
        processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (consumer, event_id)
    )
    """,
)


# Revision 0002 of every service: the relay no longer listens (see common.outbox for why a
# NOTIFY per commit was too dear), so the insert trigger goes.
DROP_NOTIFY_DDL = (
    "DROP TRIGGER IF EXISTS outbox_notify ON outbox",
    "DROP FUNCTION IF EXISTS outbox_notify()",
)


def create_outbox_tables() -> None:
    for statement in OUTBOX_DDL:
        op.execute(statement)


def drop_outbox_notify() -> None:
    for statement in DROP_NOTIFY_DDL:
        op.execute(statement)


def run_env() -> None:
    url = context.config.attributes["url"]
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()

"""Provider operations, received provider events, and the outbox.

Revision ID: 0001
"""

from alembic import op

from common.migrations import create_outbox_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE operations (
            operation_id UUID PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('charge', 'payout', 'refund')),
            status TEXT NOT NULL CHECK (status IN ('created', 'pending', 'succeeded', 'failed')),
            amount_minor BIGINT NOT NULL CHECK (amount_minor > 0),
            currency CHAR(3) NOT NULL,
            idempotency_key TEXT NOT NULL UNIQUE,
            -- A provider token, kept so an unanswered request can be asked again.
            payment_method TEXT NOT NULL,
            reference TEXT NOT NULL,
            provider TEXT NOT NULL,
            provider_reference TEXT,
            failure_reason TEXT,
            version BIGINT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            CHECK (status <> 'failed' OR failure_reason IS NOT NULL)
        )
        """
    )
    # Provider events find their operation through this; a provider reference names one
    # operation only, so a confused provider cannot settle two operations with one event.
    op.execute(
        "CREATE UNIQUE INDEX operations_provider_reference ON operations"
        " (provider, provider_reference) WHERE provider_reference IS NOT NULL"
    )
    # The recovery worker sweeps operations stuck in created/pending for too long.
    op.execute("CREATE INDEX operations_status_updated ON operations (status, updated_at)")
    op.execute(
        """
        CREATE TABLE provider_events (
            provider TEXT NOT NULL,
            provider_event_id TEXT NOT NULL,
            operation_id UUID REFERENCES operations (operation_id),
            event_type TEXT NOT NULL,
            provider_reference TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL CHECK (
                status IN ('applied', 'duplicate_outcome', 'conflict', 'unmatched', 'ignored')
            ),
            occurred_at TIMESTAMPTZ,
            raw_payload BYTEA NOT NULL,
            received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (provider, provider_event_id)
        )
        """
    )
    op.execute("CREATE INDEX provider_events_operation ON provider_events (operation_id)")
    # Unmatched and conflicting events are the work queue of reconciliation / manual review.
    op.execute(
        "CREATE INDEX provider_events_attention ON provider_events (status, received_at)"
        " WHERE status IN ('unmatched', 'conflict')"
    )
    create_outbox_tables()


def downgrade() -> None:
    raise NotImplementedError("provider records are an audit trail; restore from backup instead")

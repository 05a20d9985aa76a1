"""Several providers: failover routing, unknown outcomes, payouts and refunds, history.

Revision ID: 0003_providers
"""

from alembic import op

revision = "0003_providers"
down_revision = "0002_outbox_without_notify"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Set when a request to the provider went unanswered: the provider may have acted, so
    # the operation is bound to that provider until it says what happened.
    op.execute("ALTER TABLE operations ADD COLUMN outcome_unknown BOOLEAN NOT NULL DEFAULT false")
    # A refund names the charge it refunds; refunds of one charge never exceed it.
    op.execute(
        "ALTER TABLE operations ADD COLUMN parent_operation_id UUID"
        " REFERENCES operations (operation_id)"
    )
    op.execute(
        "CREATE INDEX operations_parent ON operations (parent_operation_id)"
        " WHERE parent_operation_id IS NOT NULL"
    )
    op.execute(
        """
        CREATE TABLE operation_history (
            history_id BIGSERIAL PRIMARY KEY,
            operation_id UUID NOT NULL REFERENCES operations (operation_id),
            version BIGINT NOT NULL,
            status TEXT NOT NULL,
            provider TEXT NOT NULL,
            provider_reference TEXT,
            failure_reason TEXT,
            outcome_unknown BOOLEAN NOT NULL,
            recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX operation_history_operation ON operation_history (operation_id)")
    op.execute("ALTER TABLE provider_events DROP CONSTRAINT provider_events_status_check")
    op.execute(
        "ALTER TABLE provider_events ADD CONSTRAINT provider_events_status_check CHECK (status IN"
        " ('applied', 'duplicate_outcome', 'conflict', 'unmatched', 'ignored', 'mismatch',"
        " 'stale'))"
    )
    # Mismatches join the manual-review work queue.
    op.execute("DROP INDEX provider_events_attention")
    op.execute(
        "CREATE INDEX provider_events_attention ON provider_events (status, received_at)"
        " WHERE status IN ('unmatched', 'conflict', 'mismatch')"
    )


def downgrade() -> None:
    raise NotImplementedError("provider records are an audit trail; restore from backup instead")

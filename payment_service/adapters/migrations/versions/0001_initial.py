"""Payments, their status history (the audit trail), and the outbox.

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
        CREATE TABLE payments (
            payment_id UUID PRIMARY KEY,
            seq BIGSERIAL NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            status TEXT NOT NULL,
            amount_minor BIGINT NOT NULL CHECK (amount_minor > 0),
            currency CHAR(3) NOT NULL,
            idempotency_key TEXT NOT NULL UNIQUE,
            source_account_id UUID,
            destination_account_id UUID,
            payment_method TEXT NOT NULL DEFAULT '',
            failure_reason TEXT NOT NULL DEFAULT '',
            gateway_operation_id TEXT NOT NULL DEFAULT '',
            version BIGINT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL
        )
        """
    )
    # The recovery worker sweeps non-terminal payments by age.
    op.execute("CREATE INDEX payments_status_updated ON payments (status, updated_at)")
    op.execute("CREATE INDEX payments_destination ON payments (destination_account_id, seq)")
    op.execute("CREATE INDEX payments_source ON payments (source_account_id, seq)")
    op.execute(
        """
        CREATE TABLE payment_status_history (
            payment_id UUID NOT NULL REFERENCES payments (payment_id),
            sequence BIGINT NOT NULL,
            from_status TEXT,
            to_status TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '',
            occurred_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (payment_id, sequence)
        )
        """
    )
    create_outbox_tables()


def downgrade() -> None:
    raise NotImplementedError("payments are never dropped; restore from backup instead")

"""The audit trail: every saga step and transition of a payment, in order.

Existing payments get one step per recorded transition (`status.<to>`), so their trail
starts complete as far as anything was recorded.

Revision ID: 0004_payment_steps
"""

from alembic import op

revision = "0004_payment_steps"
down_revision = "0003_idempotency_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE payments ADD COLUMN steps BIGINT NOT NULL DEFAULT 0")
    op.execute(
        """
        CREATE TABLE payment_steps (
            payment_id UUID NOT NULL REFERENCES payments (payment_id),
            step BIGINT NOT NULL,
            event_type TEXT NOT NULL,
            occurred_at TIMESTAMPTZ NOT NULL,
            data JSONB NOT NULL DEFAULT '{}'::jsonb,
            error TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (payment_id, step)
        )
        """
    )
    op.execute(
        """
        INSERT INTO payment_steps (payment_id, step, event_type, occurred_at, data, error)
        SELECT payment_id, sequence, 'status.' || to_status, occurred_at,
               jsonb_build_object('from', coalesce(from_status, '')), reason
        FROM payment_status_history
        """
    )
    op.execute("UPDATE payments SET steps = version")


def downgrade() -> None:
    raise NotImplementedError("payments: restore from backup instead of downgrading")

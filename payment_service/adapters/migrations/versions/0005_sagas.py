"""Withdrawals, transfers and refunds: a payment's saga state (its recovery points: hold,
provider call, refund amounts) and its parent (a refund's deposit); an idempotency key's
stored response.

Existing keys were answered when their payment was created (deposits answer at once), so
they store version 1 as their response.

Revision ID: 0005_sagas
"""

from alembic import op

revision = "0005_sagas"
down_revision = "0004_payment_steps"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE payments ADD COLUMN parent_payment_id UUID")
    op.execute("ALTER TABLE payments ADD COLUMN saga JSONB NOT NULL DEFAULT '{}'::jsonb")
    op.execute("CREATE INDEX payments_parent ON payments (parent_payment_id)")
    # The resume sweep looks for payments whose saga stopped between steps.
    op.execute(
        "CREATE INDEX payments_unsettled ON payments (updated_at)"
        " WHERE status IN ('initiated', 'refunding')"
    )
    op.execute("ALTER TABLE idempotency_keys ADD COLUMN response_version BIGINT")
    op.execute("ALTER TABLE idempotency_keys ADD COLUMN error_reason TEXT NOT NULL DEFAULT ''")
    op.execute("ALTER TABLE idempotency_keys ADD COLUMN error_message TEXT NOT NULL DEFAULT ''")
    op.execute("UPDATE idempotency_keys SET response_version = 1")
    op.execute("CREATE INDEX idempotency_keys_payment ON idempotency_keys (payment_id)")


def downgrade() -> None:
    raise NotImplementedError("payments: restore from backup instead of downgrading")

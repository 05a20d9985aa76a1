"""Idempotency keys scoped to the caller, with the fingerprint of their first request.

Existing payments keep their keys (caller `anonymous`, fingerprint computed as the service
computes it); the key's uniqueness moves from payments to this table, so a key purged after
the retention can be used again.

Revision ID: 0003_idempotency_keys
"""

from alembic import op

revision = "0003_idempotency_keys"
down_revision = "0002_outbox_without_notify"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE idempotency_keys (
            caller TEXT NOT NULL,
            key TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            payment_id UUID NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (caller, key)
        )
        """
    )
    op.execute("CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at)")
    op.execute(
        """
        INSERT INTO idempotency_keys (caller, key, fingerprint, payment_id, created_at)
        SELECT 'anonymous', idempotency_key,
               encode(sha256(convert_to(concat_ws('|', kind, destination_account_id::text,
                   amount_minor::text, currency, payment_method), 'UTF8')), 'hex'),
               payment_id, created_at
        FROM payments
        """
    )
    op.execute("ALTER TABLE payments DROP CONSTRAINT payments_idempotency_key_key")


def downgrade() -> None:
    raise NotImplementedError("payments: restore from backup instead of downgrading")

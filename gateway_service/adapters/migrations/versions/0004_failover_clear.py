"""Failover only when provably safe: an operation remembers that every provider asked
answered that it did not act (Operation.failover_clear).

Before it, a stored CREATED operation without an unknown outcome counted as never sent, so a
request retried after its first asker died (or lost the database while recording a timeout)
could go to the next provider while the first still held the original request: a double
charge found by `make chaos`. Existing rows start false, which keeps them with their provider.

Revision ID: 0004_failover_clear
"""

from alembic import op

revision = "0004_failover_clear"
down_revision = "0003_providers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE operations ADD COLUMN failover_clear BOOLEAN NOT NULL DEFAULT false")


def downgrade() -> None:
    op.execute("ALTER TABLE operations DROP COLUMN failover_clear")

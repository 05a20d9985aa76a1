"""The journal by time: the recovery worker's reconciliation lists recent ledger transactions
(ListTransactions), a page at a time in (created_at, transaction_id) order.

Revision ID: 0004_journal_by_time
"""

from alembic import op

revision = "0004_journal_by_time"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX ledger_transactions_created"
        " ON ledger_transactions (created_at, transaction_id)"
    )


def downgrade() -> None:
    op.execute("DROP INDEX ledger_transactions_created")

"""Accounts, the double-entry ledger, and the outbox.

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
        CREATE TABLE accounts (
            account_id UUID PRIMARY KEY,
            owner_id TEXT NOT NULL,
            currency CHAR(3) NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('customer', 'clearing')),
            total_minor BIGINT NOT NULL DEFAULT 0,
            held_minor BIGINT NOT NULL DEFAULT 0 CHECK (held_minor >= 0),
            version BIGINT NOT NULL,
            open_ref TEXT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            UNIQUE (owner_id, open_ref),
            -- Invariant 2, enforced by the database too: holds count against available.
            CHECK (kind = 'clearing' OR total_minor - held_minor >= 0)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE ledger_transactions (
            transaction_id UUID PRIMARY KEY,
            operation_ref TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            description TEXT NOT NULL DEFAULT '',
            created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE ledger_entries (
            seq BIGSERIAL PRIMARY KEY,
            entry_id UUID NOT NULL UNIQUE,
            transaction_id UUID NOT NULL REFERENCES ledger_transactions (transaction_id),
            account_id UUID NOT NULL REFERENCES accounts (account_id),
            amount_minor BIGINT NOT NULL,
            currency CHAR(3) NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX ledger_entries_account ON ledger_entries (account_id, seq)")
    op.execute("CREATE INDEX ledger_entries_transaction ON ledger_entries (transaction_id)")
    create_outbox_tables()


def downgrade() -> None:
    raise NotImplementedError("the ledger is append-only; restore from backup instead")

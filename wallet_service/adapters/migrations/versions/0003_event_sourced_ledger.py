"""Event-sourced accounts, holds, idempotent operations, FX rates, an append-only journal.

Revision ID: 0003
"""

from alembic import op

revision = "0003"
down_revision = "0002_outbox_without_notify"
branch_labels = None
depends_on = None

STATEMENTS = (
    # Accounts now carry a lifecycle status and system accounts of three kinds; only customer
    # accounts keep a projected balance, so only theirs must stay non-negative.
    "ALTER TABLE accounts DROP CONSTRAINT accounts_kind_check",
    "ALTER TABLE accounts DROP CONSTRAINT accounts_check",
    """ALTER TABLE accounts
        ADD CONSTRAINT accounts_kind_check
            CHECK (kind IN ('customer', 'clearing', 'fx', 'fees')),
        ADD CONSTRAINT accounts_available_non_negative
            CHECK (kind <> 'customer' OR total_minor - held_minor >= 0),
        ADD COLUMN status TEXT NOT NULL DEFAULT 'open'
            CONSTRAINT accounts_status_check CHECK (status IN ('open', 'frozen', 'closed'))""",
    """CREATE TABLE account_events (
        account_id UUID NOT NULL REFERENCES accounts (account_id),
        version BIGINT NOT NULL CHECK (version > 0),
        event_type TEXT NOT NULL,
        payload JSONB NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        recorded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        -- Optimistic concurrency: two writers of the same version cannot both commit.
        PRIMARY KEY (account_id, version)
    )""",
    """CREATE TABLE account_snapshots (
        account_id UUID NOT NULL REFERENCES accounts (account_id),
        version BIGINT NOT NULL,
        state JSONB NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (account_id, version)
    )""",
    """CREATE TABLE holds (
        hold_id UUID PRIMARY KEY,
        account_id UUID NOT NULL REFERENCES accounts (account_id),
        currency CHAR(3) NOT NULL,
        amount_minor BIGINT NOT NULL CHECK (amount_minor > 0),
        captured_minor BIGINT NOT NULL DEFAULT 0,
        status TEXT NOT NULL
            CHECK (status IN ('open', 'captured', 'released', 'expired')),
        expires_at TIMESTAMPTZ NOT NULL,
        reference TEXT NOT NULL DEFAULT '',
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
    # The expiry sweep only ever looks at open holds.
    "CREATE INDEX holds_open_expiry ON holds (expires_at) WHERE status = 'open'",
    """CREATE TABLE operations (
        operation_ref TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        result JSONB NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
    """CREATE TABLE fx_rates (
        base CHAR(3) NOT NULL,
        quote CHAR(3) NOT NULL,
        as_of TIMESTAMPTZ NOT NULL,
        numerator NUMERIC(40, 0) NOT NULL CHECK (numerator > 0),
        denominator NUMERIC(40, 0) NOT NULL CHECK (denominator > 0),
        source TEXT NOT NULL,
        PRIMARY KEY (base, quote, as_of)
    )""",
    # Accounts opened before their histories existed start from a baseline snapshot of their
    # projected balance (the walking skeleton had no holds); their events follow it.
    """INSERT INTO account_snapshots (account_id, version, state)
        SELECT account_id, version, jsonb_build_object(
            'version', version, 'last_hash', repeat('0', 64), 'status', 'open',
            'total_minor', total_minor, 'held_minor', held_minor, 'holds', '[]'::jsonb)
        FROM accounts WHERE kind = 'customer'""",
    "ALTER TABLE ledger_transactions ADD COLUMN conversion JSONB",
    "ALTER TABLE ledger_entries ADD COLUMN balance_after_minor BIGINT",
    # Each customer entry carries its account's running balance (ListEntries shows it); fill it
    # in for the entries written before, while the journal still accepts updates.
    """UPDATE ledger_entries e SET balance_after_minor = r.running
        FROM (SELECT le.seq, sum(le.amount_minor)
                OVER (PARTITION BY le.account_id ORDER BY le.seq) AS running
              FROM ledger_entries le JOIN accounts a USING (account_id)
              WHERE a.kind = 'customer') r
        WHERE e.seq = r.seq""",
    # The journal and the account histories are append-only. Corrections are new reversing
    # transactions; a trigger refuses UPDATE, DELETE and TRUNCATE even to the table's owner
    # (the service's own database user), where a missing GRANT would not.
    """CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END $$""",
)

APPEND_ONLY = ("ledger_transactions", "ledger_entries", "account_events")


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)
    for table in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION refuse_change()"
        )


def downgrade() -> None:
    raise NotImplementedError("the ledger is append-only; restore from backup instead")

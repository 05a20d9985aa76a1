"""The wallet database schema as SQLAlchemy Core tables. The migrations create it; a test
compares the migrated database with this metadata, so the two cannot drift apart."""

from __future__ import annotations

from sqlalchemy import (
    CHAR,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()


def _now() -> Column[object]:
    return Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now())


accounts = Table(
    "accounts",
    metadata,
    Column("account_id", Uuid(as_uuid=False), primary_key=True),
    Column("owner_id", Text, nullable=False),
    Column("currency", CHAR(3), nullable=False),
    Column("kind", Text, nullable=False),
    Column("total_minor", BigInteger, nullable=False, server_default=text("0")),
    Column("held_minor", BigInteger, nullable=False, server_default=text("0")),
    Column("version", BigInteger, nullable=False),
    Column("open_ref", Text, nullable=False),
    _now(),
    Column("status", Text, nullable=False, server_default=text("'open'::text")),
    UniqueConstraint("owner_id", "open_ref", name="accounts_owner_id_open_ref_key"),
    CheckConstraint("held_minor >= 0", name="accounts_held_minor_check"),
    CheckConstraint("kind IN ('customer', 'clearing', 'fx', 'fees')", name="accounts_kind_check"),
    CheckConstraint(
        "kind <> 'customer' OR total_minor - held_minor >= 0",
        name="accounts_available_non_negative",
    ),
    CheckConstraint("status IN ('open', 'frozen', 'closed')", name="accounts_status_check"),
)

account_events = Table(
    "account_events",
    metadata,
    Column("account_id", Uuid(as_uuid=False), ForeignKey("accounts.account_id"), nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("prev_hash", Text, nullable=False),
    Column("hash", Text, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("account_id", "version"),
    CheckConstraint("version > 0", name="account_events_version_check"),
)

account_snapshots = Table(
    "account_snapshots",
    metadata,
    Column("account_id", Uuid(as_uuid=False), ForeignKey("accounts.account_id"), nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("state", JSONB, nullable=False),
    _now(),
    PrimaryKeyConstraint("account_id", "version"),
)

holds = Table(
    "holds",
    metadata,
    Column("hold_id", Uuid(as_uuid=False), primary_key=True),
    Column("account_id", Uuid(as_uuid=False), ForeignKey("accounts.account_id"), nullable=False),
    Column("currency", CHAR(3), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("captured_minor", BigInteger, nullable=False, server_default=text("0")),
    Column("status", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("reference", Text, nullable=False, server_default=text("''::text")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("amount_minor > 0", name="holds_amount_minor_check"),
    CheckConstraint(
        "status IN ('open', 'captured', 'released', 'expired')", name="holds_status_check"
    ),
    Index("holds_open_expiry", "expires_at", postgresql_where=text("status = 'open'")),
)

operations = Table(
    "operations",
    metadata,
    Column("operation_ref", Text, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("fingerprint", Text, nullable=False),
    Column("result", JSONB, nullable=False),
    _now(),
)

fx_rates = Table(
    "fx_rates",
    metadata,
    Column("base", CHAR(3), nullable=False),
    Column("quote", CHAR(3), nullable=False),
    Column("as_of", DateTime(timezone=True), nullable=False),
    Column("numerator", Numeric(40, 0), nullable=False),
    Column("denominator", Numeric(40, 0), nullable=False),
    Column("source", Text, nullable=False),
    PrimaryKeyConstraint("base", "quote", "as_of"),
    CheckConstraint("numerator > 0", name="fx_rates_numerator_check"),
    CheckConstraint("denominator > 0", name="fx_rates_denominator_check"),
)

ledger_transactions = Table(
    "ledger_transactions",
    metadata,
    Column("transaction_id", Uuid(as_uuid=False), primary_key=True),
    Column("operation_ref", Text, nullable=False, unique=True),
    Column("kind", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=text("''::text")),
    _now(),
    Column("conversion", JSONB),
    Index("ledger_transactions_created", "created_at", "transaction_id"),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=True),
    Column("entry_id", Uuid(as_uuid=False), nullable=False, unique=True),
    Column(
        "transaction_id",
        Uuid(as_uuid=False),
        ForeignKey("ledger_transactions.transaction_id"),
        nullable=False,
    ),
    Column("account_id", Uuid(as_uuid=False), ForeignKey("accounts.account_id"), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", CHAR(3), nullable=False),
    _now(),
    Column("balance_after_minor", BigInteger),
    Index("ledger_entries_account", "account_id", "seq"),
    Index("ledger_entries_transaction", "transaction_id"),
)

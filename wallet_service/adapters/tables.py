"""The wallet database schema as SQLAlchemy Core tables (the migrations create it)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    func,
)

metadata = MetaData()

accounts = Table(
    "accounts",
    metadata,
    Column("account_id", Uuid(as_uuid=False), primary_key=True),
    Column("owner_id", Text, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("kind", Text, nullable=False),
    Column("total_minor", BigInteger, nullable=False),
    Column("held_minor", BigInteger, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("open_ref", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

ledger_transactions = Table(
    "ledger_transactions",
    metadata,
    Column("transaction_id", Uuid(as_uuid=False), primary_key=True),
    Column("operation_ref", Text, nullable=False, unique=True),
    Column("kind", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
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
    Column("currency", String(3), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

"""The payments database schema as SQLAlchemy Core tables: the one description of it that
code reads. The migrations create it; tests/integration/payment_service/test_schema.py fails
when the two drift apart."""

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
    Table,
    Text,
    Uuid,
    text,
)

metadata = MetaData()
EMPTY = text("''")

payments = Table(
    "payments",
    metadata,
    Column("payment_id", Uuid(as_uuid=False), primary_key=True),
    Column("seq", BigInteger, nullable=False, unique=True),
    Column("kind", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("amount_minor", BigInteger, CheckConstraint("amount_minor > 0"), nullable=False),
    Column("currency", CHAR(3), nullable=False),
    Column("idempotency_key", Text, nullable=False, unique=True),
    Column("source_account_id", Uuid(as_uuid=False)),
    Column("destination_account_id", Uuid(as_uuid=False)),
    Column("payment_method", Text, nullable=False, server_default=EMPTY),
    Column("failure_reason", Text, nullable=False, server_default=EMPTY),
    Column("gateway_operation_id", Text, nullable=False, server_default=EMPTY),
    Column("version", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # The recovery worker sweeps non-terminal payments by age; listings go by account.
    Index("payments_status_updated", "status", "updated_at"),
    Index("payments_destination", "destination_account_id", "seq"),
    Index("payments_source", "source_account_id", "seq"),
)

payment_status_history = Table(
    "payment_status_history",
    metadata,
    Column("payment_id", Uuid(as_uuid=False), ForeignKey("payments.payment_id"), primary_key=True),
    Column("sequence", BigInteger, primary_key=True),
    Column("from_status", Text),
    Column("to_status", Text, nullable=False),
    Column("reason", Text, nullable=False, server_default=EMPTY),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
)

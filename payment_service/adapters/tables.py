"""The payments database schema as SQLAlchemy Core tables (the migrations create it)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, MetaData, String, Table, Text, Uuid

metadata = MetaData()

payments = Table(
    "payments",
    metadata,
    Column("payment_id", Uuid(as_uuid=False), primary_key=True),
    Column("seq", BigInteger, nullable=False, unique=True),
    Column("kind", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("idempotency_key", Text, nullable=False, unique=True),
    Column("source_account_id", Uuid(as_uuid=False)),
    Column("destination_account_id", Uuid(as_uuid=False)),
    Column("payment_method", Text, nullable=False),
    Column("failure_reason", Text, nullable=False),
    Column("gateway_operation_id", Text, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

payment_status_history = Table(
    "payment_status_history",
    metadata,
    Column("payment_id", Uuid(as_uuid=False), primary_key=True),
    Column("sequence", BigInteger, primary_key=True),
    Column("from_status", Text),
    Column("to_status", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
)

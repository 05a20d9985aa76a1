"""The gateway database schema as SQLAlchemy Core tables (the migrations create it)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    func,
)

metadata = MetaData()

operations = Table(
    "operations",
    metadata,
    Column("operation_id", Uuid(as_uuid=False), primary_key=True),
    Column("kind", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("idempotency_key", Text, nullable=False, unique=True),
    Column("payment_method", Text, nullable=False),
    Column("reference", Text, nullable=False),
    Column("provider", Text, nullable=False),
    Column("provider_reference", Text),
    Column("failure_reason", Text),
    Column("version", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("outcome_unknown", Boolean, nullable=False, server_default="false"),
    Column("parent_operation_id", Uuid(as_uuid=False), ForeignKey("operations.operation_id")),
)

operation_history = Table(
    "operation_history",
    metadata,
    Column("history_id", BigInteger, primary_key=True, autoincrement=True),
    Column(
        "operation_id", Uuid(as_uuid=False), ForeignKey("operations.operation_id"), nullable=False
    ),
    Column("version", BigInteger, nullable=False),
    Column("status", Text, nullable=False),
    Column("provider", Text, nullable=False),
    Column("provider_reference", Text),
    Column("failure_reason", Text),
    Column("outcome_unknown", Boolean, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

provider_events = Table(
    "provider_events",
    metadata,
    Column("provider", Text, primary_key=True),
    Column("provider_event_id", Text, primary_key=True),
    Column("operation_id", Uuid(as_uuid=False), ForeignKey("operations.operation_id")),
    Column("event_type", Text, nullable=False),
    Column("provider_reference", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("occurred_at", DateTime(timezone=True)),
    Column("raw_payload", LargeBinary, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

"""The gateway database schema as SQLAlchemy Core tables: the one description of it that code
reads. The migrations create it; tests/integration/gateway_service/test_schema.py fails when
the two drift apart."""

from __future__ import annotations

from sqlalchemy import (
    CHAR,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    Table,
    Text,
    Uuid,
    func,
    text,
)

metadata = MetaData()

operations = Table(
    "operations",
    metadata,
    Column("operation_id", Uuid(as_uuid=False), primary_key=True),
    Column("kind", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", CHAR(3), nullable=False),
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
    # Every provider asked answered that it did not act (domain Operation.failover_clear).
    Column("failover_clear", Boolean, nullable=False, server_default="false"),
    # A provider's reference names one operation; webhooks find their operation by it.
    Index(
        "operations_provider_reference",
        "provider",
        "provider_reference",
        unique=True,
        postgresql_where=text("provider_reference IS NOT NULL"),
    ),
    Index("operations_status_updated", "status", "updated_at"),
    Index("operations_parent", "parent_operation_id"),
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
    Index("operation_history_operation", "operation_id"),
)

provider_events = Table(
    "provider_events",
    metadata,
    Column("provider", Text, primary_key=True),
    Column("provider_event_id", Text, primary_key=True),
    Column("operation_id", Uuid(as_uuid=False), ForeignKey("operations.operation_id")),
    Column("event_type", Text, nullable=False),
    Column("provider_reference", Text, nullable=False, server_default=text("''")),
    Column("status", Text, nullable=False),
    Column("occurred_at", DateTime(timezone=True)),
    Column("raw_payload", LargeBinary, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("provider_events_operation", "operation_id"),
    # The manual-review work queue: unmatched, conflicting and mismatched events by age.
    Index(
        "provider_events_attention",
        "status",
        "received_at",
        postgresql_where=text("status IN ('unmatched', 'conflict', 'mismatch')"),
    ),
)

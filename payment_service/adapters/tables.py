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
from sqlalchemy.dialects.postgresql import JSONB

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
    # The key the payment was created with; its uniqueness lives in idempotency_keys.
    Column("idempotency_key", Text, nullable=False),
    Column("source_account_id", Uuid(as_uuid=False)),
    Column("destination_account_id", Uuid(as_uuid=False)),
    Column("payment_method", Text, nullable=False, server_default=EMPTY),
    Column("failure_reason", Text, nullable=False, server_default=EMPTY),
    Column("gateway_operation_id", Text, nullable=False, server_default=EMPTY),
    Column("version", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # How many audit-trail steps the payment has (the last one's `step`).
    Column("steps", BigInteger, nullable=False, server_default=text("0")),
    # A refund's deposit.
    Column("parent_payment_id", Uuid(as_uuid=False)),
    # The saga's recovery points (hold, provider call, refund amounts): domain SagaState.
    Column("saga", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    # The recovery worker sweeps non-terminal payments by age; listings go by account.
    Index("payments_status_updated", "status", "updated_at"),
    Index("payments_destination", "destination_account_id", "seq"),
    Index("payments_source", "source_account_id", "seq"),
    Index("payments_parent", "parent_payment_id"),
    # The resume sweep: payments whose saga may have stopped between steps.
    Index(
        "payments_unsettled",
        "updated_at",
        postgresql_where=text("status IN ('initiated', 'refunding')"),
    ),
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

# A caller's idempotency key, the fingerprint of the request it was first used for, and the
# payment that request made; purged after the retention (PAYSUITE_IDEMPOTENCY_RETENTION_H).
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("caller", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("fingerprint", Text, nullable=False),
    Column("payment_id", Uuid(as_uuid=False), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    # The response the key answers with: the payment as of this version (NULL while the first
    # request is in flight), or the refusal.
    Column("response_version", BigInteger),
    Column("error_reason", Text, nullable=False, server_default=EMPTY),
    Column("error_message", Text, nullable=False, server_default=EMPTY),
    Index("idempotency_keys_created", "created_at"),
    Index("idempotency_keys_payment", "payment_id"),
)

# The audit trail: every step of a payment's saga and every transition, in order.
payment_steps = Table(
    "payment_steps",
    metadata,
    Column("payment_id", Uuid(as_uuid=False), ForeignKey("payments.payment_id"), primary_key=True),
    Column("step", BigInteger, primary_key=True),
    Column("event_type", Text, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("data", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("error", Text, nullable=False, server_default=EMPTY),
)

# Manual-review cases (domain ReviewCase): at most one open per payment, so a second reason to
# look adds to `evidence` instead of opening another case.
review_cases = Table(
    "review_cases",
    metadata,
    Column("case_id", Uuid(as_uuid=False), primary_key=True),
    # The listing's cursor: cases in the order they were opened.
    Column("seq", BigInteger, nullable=False, unique=True),
    Column("payment_id", Uuid(as_uuid=False), ForeignKey("payments.payment_id"), nullable=False),
    Column("reason_code", Text, nullable=False),
    Column("reason", Text, nullable=False, server_default=EMPTY),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("status", Text, nullable=False),
    Column("evidence", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("resolution", Text, nullable=False, server_default=EMPTY),
    Column("note", Text, nullable=False, server_default=EMPTY),
    Column("resolved_by", Text, nullable=False, server_default=EMPTY),
    Column("resolved_at", DateTime(timezone=True)),
    # When the SLA alarm last logged this case (at most once an hour).
    Column("alarmed_at", DateTime(timezone=True)),
    CheckConstraint("status IN ('open', 'resolved')", name="review_cases_status"),
    Index(
        "review_cases_one_open",
        "payment_id",
        unique=True,
        postgresql_where=text("status = 'open'"),
    ),
    Index("review_cases_payment", "payment_id"),
)

"""Manual-review cases: one per payment an operator must decide, at most one open at a time.

Payments already in requires_manual_review get an open case (COMPENSATION_FAILED or
CAPTURE_FAILED, from the step that put them there), so the workbench starts complete.

Revision ID: 0006_review_cases
"""

from alembic import op

revision = "0006_review_cases"
down_revision = "0005_sagas"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE review_cases (
            case_id UUID PRIMARY KEY,
            seq BIGSERIAL NOT NULL UNIQUE,
            payment_id UUID NOT NULL REFERENCES payments (payment_id),
            reason_code TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '',
            opened_at TIMESTAMPTZ NOT NULL,
            status TEXT NOT NULL,
            evidence JSONB NOT NULL DEFAULT '[]'::jsonb,
            resolution TEXT NOT NULL DEFAULT '',
            note TEXT NOT NULL DEFAULT '',
            resolved_by TEXT NOT NULL DEFAULT '',
            resolved_at TIMESTAMPTZ,
            alarmed_at TIMESTAMPTZ,
            CONSTRAINT review_cases_status CHECK (status IN ('open', 'resolved'))
        )
        """
    )
    # The one-open-case rule; a second reason to look upserts into the open case.
    op.execute(
        "CREATE UNIQUE INDEX review_cases_one_open ON review_cases (payment_id)"
        " WHERE status = 'open'"
    )
    op.execute("CREATE INDEX review_cases_payment ON review_cases (payment_id)")
    op.execute(
        """
        INSERT INTO review_cases (case_id, payment_id, reason_code, reason, opened_at, status,
                                  evidence)
        SELECT gen_random_uuid(), p.payment_id,
               CASE WHEN p.kind = 'deposit' THEN 'COMPENSATION_FAILED' ELSE 'CAPTURE_FAILED' END,
               h.reason, h.occurred_at, 'open',
               jsonb_build_array(jsonb_build_object(
                   'reason_code',
                   CASE WHEN p.kind = 'deposit' THEN 'COMPENSATION_FAILED'
                        ELSE 'CAPTURE_FAILED' END,
                   'reason', h.reason,
                   'source', 'status.requires_manual_review',
                   'occurred_at', h.occurred_at))
        FROM payments p
        JOIN payment_status_history h
          ON h.payment_id = p.payment_id AND h.sequence = p.version
        WHERE p.status = 'requires_manual_review'
        ORDER BY h.occurred_at
        """
    )


def downgrade() -> None:
    raise NotImplementedError("payments: restore from backup instead of downgrading")

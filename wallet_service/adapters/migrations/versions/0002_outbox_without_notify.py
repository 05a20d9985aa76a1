"""The outbox without its NOTIFY trigger: relays are woken in-process and poll.

Revision ID: 0002_outbox_without_notify
"""

from common.migrations import drop_outbox_notify

revision = "0002_outbox_without_notify"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    drop_outbox_notify()


def downgrade() -> None:
    raise NotImplementedError("wallets: restore from backup instead of downgrading")

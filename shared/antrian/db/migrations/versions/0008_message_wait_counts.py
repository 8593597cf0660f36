"""Wait time: how long messages waited before a worker took them, as per-queue, per-minute histogram bucket counts
(``message_wait_counts``), which every worker process adds to in small batches and ``/api/queues`` reads p50/p95 from.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "message_wait_counts",
        # The minute (UTC) in which the messages started processing.
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("queue_name", sa.Text, nullable=False),
        # The bucket's upper bound in seconds ('Infinity' for the last one), as Prometheus' `le`.
        sa.Column("le", sa.Float, nullable=False),
        # Messages of that queue whose wait fell in (previous bound, le] during that minute (not cumulative).
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("minute", "queue_name", "le", name="message_wait_counts_pkey"),
    )


def downgrade() -> None:
    op.drop_table("message_wait_counts")

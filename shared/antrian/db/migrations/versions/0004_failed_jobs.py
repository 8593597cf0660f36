"""Failed jobs: messages that ran out of attempts, kept for an operator to read, retry or flush.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "failed_jobs",
        sa.Column("id", sa.BigInteger, primary_key=True),
        # Dramatiq's message id: the same message failing again (a redelivery) updates its row.
        sa.Column("message_id", sa.Text, nullable=False, unique=True),
        sa.Column("queue_name", sa.Text, nullable=False),
        sa.Column("actor_name", sa.Text, nullable=False),
        sa.Column("args", JSONB, nullable=False),
        sa.Column("kwargs", JSONB, nullable=False),
        sa.Column("options", JSONB, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("exception", sa.Text, nullable=False),
        sa.Column("traceback", sa.Text, nullable=False, server_default=""),
        sa.Column("worker", sa.Text, nullable=False, server_default=""),
        sa.Column("enqueued_at", TZ),
        sa.Column("failed_at", TZ, nullable=False, server_default=sa.func.now()),
    )
    op.create_index("failed_jobs_queue_name_id", "failed_jobs", ["queue_name", "id"])
    op.create_index("failed_jobs_failed_at", "failed_jobs", ["failed_at"])
    op.create_table(
        "failed_job_actions",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("queue_name", sa.Text, nullable=False),
        sa.Column("jobs", sa.Integer, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("at", TZ, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("action IN ('retry', 'flush')", name="failed_job_actions_action"),
    )


def downgrade() -> None:
    op.drop_table("failed_job_actions")
    op.drop_table("failed_jobs")

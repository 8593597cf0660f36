"""Scheduled task runs: which time slot of each scheduled task has been enqueued.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scheduled_task_runs",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("last_enqueued_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("scheduled_task_runs")

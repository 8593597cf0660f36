"""Paused queues: an operator stops a queue's consumption on every worker of every host (``antrian queues pause``,
``POST /api/queues/<name>/pause``) while its messages stay in RabbitMQ; a row here is the pause, so it survives
restarts and every worker process reads the same set.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "paused_queues",
        sa.Column("queue_name", sa.Text, primary_key=True),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        # `api`, `admin` or `cli`: who asked (the operator's name once tokens are named).
        sa.Column("paused_by", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("paused_queues")

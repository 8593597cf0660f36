"""Students and sync runs.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "students",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("idperson", sa.BigInteger, nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=False, server_default=""),
        sa.Column("pembayaran", JSONB),
        sa.Column("pembayaran_synced_at", TZ),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "sync_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("status", sa.Text, nullable=False, server_default="running"),
        sa.Column("total", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_student_id", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("items_recorded", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("fanout_cursor", sa.BigInteger),
        sa.Column("fanout_done", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("started_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("finished_at", TZ),
        sa.CheckConstraint("status IN ('running', 'finished')", name="sync_runs_status"),
    )
    op.create_index(
        "sync_runs_one_running", "sync_runs", [sa.text("(true)")], unique=True,
        postgresql_where=sa.text("status = 'running'"),
    )
    op.create_table(
        "sync_run_counts",
        sa.Column("run_id", sa.Integer, sa.ForeignKey("sync_runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("shard", sa.SmallInteger, primary_key=True),
        sa.Column("total", sa.Integer, nullable=False, server_default="0"),
        sa.Column("processed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("failed", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "sync_items",
        sa.Column("run_id", sa.Integer, sa.ForeignKey("sync_runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("idperson", sa.BigInteger, primary_key=True),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("error", sa.Text),
        sa.Column("finished_at", TZ),
        sa.CheckConstraint("status IN ('pending', 'success', 'failed')", name="sync_items_status"),
    )
    op.create_index("sync_items_failed", "sync_items", ["run_id"], postgresql_where=sa.text("status = 'failed'"))


def downgrade() -> None:
    op.drop_table("sync_items")
    op.drop_table("sync_run_counts")
    op.drop_table("sync_runs")
    op.drop_table("students")

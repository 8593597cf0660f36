"""Sync runs an operator manages: a run can end ``cancelled`` (``POST /api/sync-runs/<id>/cancel``,
``antrian sync cancel ID``).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_constraint("sync_runs_status", "sync_runs", type_="check")
    op.create_check_constraint("sync_runs_status", "sync_runs", "status IN ('running', 'finished', 'cancelled')")


def downgrade() -> None:
    # A cancelled run was given up before its end: it is closed as finished, with the counts it had.
    op.execute("UPDATE sync_runs SET status = 'finished' WHERE status = 'cancelled'")
    op.drop_constraint("sync_runs_status", "sync_runs", type_="check")
    op.create_check_constraint("sync_runs_status", "sync_runs", "status IN ('running', 'finished')")

"""Indexes that make a scrape of sync-api's metrics read a few index entries instead of whole tables.

- ``payments_refund_due``: the refund_due count and the oldest open refund's age read only the refund_due
  payments (a handful) instead of every payment ever received.
- ``sync_items_run_finished``: the running run's last outcome (``antrian_sync_run_idle_seconds``) is one index
  entry instead of every student of the run.
- ``failed_jobs_queue_actor``: the failed-jobs gauge counts from the index alone, not the rows with their
  tracebacks.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("payments_refund_due", "payments", ["booking_id"], postgresql_include=["received_at"],
                    postgresql_where=sa.text("outcome = 'refund_due'"))
    op.create_index("sync_items_run_finished", "sync_items", ["run_id", sa.text("finished_at DESC NULLS LAST")])
    op.create_index("failed_jobs_queue_actor", "failed_jobs", ["queue_name", "actor_name"])


def downgrade() -> None:
    op.drop_index("failed_jobs_queue_actor", table_name="failed_jobs")
    op.drop_index("sync_items_run_finished", table_name="sync_items")
    op.drop_index("payments_refund_due", table_name="payments")

"""Resends: an operator sends a booking's email once more on purpose (``email_resends``, one row per resend, its
own audit record); failed jobs can be forgotten one by one and are pruned by age, both recorded in
``failed_job_actions`` (the prune uses migration 0004's index on ``failed_at``).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "email_resends",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("booking_id", sa.BigInteger, sa.ForeignKey("bookings.id"), nullable=False, index=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        # Set by the mailer on its first attempt: the resend's own Message-ID.
        sa.Column("message_id", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        # ``api``, ``admin`` or ``cli``: who asked, for the audit trail.
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("requested_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("sent_at", TZ),
        sa.CheckConstraint("kind IN ('invoice', 'eticket', 'cancellation')", name="email_resends_kind"),
        sa.CheckConstraint("status IN ('pending', 'sent', 'failed')", name="email_resends_status"),
    )
    op.drop_constraint("failed_job_actions_action", "failed_job_actions", type_="check")
    op.create_check_constraint(
        "failed_job_actions_action", "failed_job_actions", "action IN ('retry', 'flush', 'forget', 'prune')"
    )


def downgrade() -> None:
    op.execute("DELETE FROM failed_job_actions WHERE action IN ('forget', 'prune')")
    op.drop_constraint("failed_job_actions_action", "failed_job_actions", type_="check")
    op.create_check_constraint("failed_job_actions_action", "failed_job_actions", "action IN ('retry', 'flush')")
    op.drop_table("email_resends")

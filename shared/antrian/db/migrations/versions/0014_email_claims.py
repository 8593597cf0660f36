"""Email claims: a delivery or resend being sent is claimed for a lease instead of locked in a transaction held open
across the SMTP conversation (issue 18). ``claim_id`` names the attempt that holds the claim, ``claimed_until`` is when
it lapses (a mailer that died mid-send); both are NULL when no attempt holds it.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_TABLES = ("email_deliveries", "email_resends")


def upgrade() -> None:
    for table in _TABLES:
        op.add_column(table, sa.Column("claim_id", sa.Uuid, nullable=True))
        op.add_column(table, sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for table in _TABLES:
        op.drop_column(table, "claimed_until")
        op.drop_column(table, "claim_id")

"""Rate limits without new infrastructure: one row per limit (``upstream``, ``smtp``) holding GCRA's theoretical
arrival time, which every process of every host moves on as it reserves tokens (:mod:`antrian.rate_limit`).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_limits",
        sa.Column("name", sa.Text, primary_key=True),
        # The moment by which every token handed out so far is spent at the limit's pace.
        sa.Column("tat", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rate_limits")

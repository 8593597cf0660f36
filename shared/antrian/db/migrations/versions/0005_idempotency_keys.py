"""Idempotency keys: a retried POST /api/bookings answers its first answer again instead of booking twice.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("route", sa.Text, nullable=False),
        sa.Column("caller", sa.Text, nullable=False, server_default=""),
        sa.Column("key", sa.Text, nullable=False),
        # SHA-256 (hex) of the request body's canonical JSON.
        sa.Column("request_hash", sa.Text, nullable=False),
        # The first answer; written in the transaction that inserts the row (and does the work).
        sa.Column("response_status", sa.SmallInteger),
        sa.Column("response_body", JSONB),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        # A concurrent insert of the same key waits on this index until the first transaction ends.
        sa.UniqueConstraint("route", "caller", "key", name="idempotency_keys_route_caller_key"),
    )
    # Keys are kept 24 hours: the prune deletes by age.
    op.create_index("idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_table("idempotency_keys")

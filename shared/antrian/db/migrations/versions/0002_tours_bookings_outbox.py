"""Tours, bookings, payment notifications, the transactional outbox and email deliveries.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
MONEY = sa.Numeric(14, 2)


def upgrade() -> None:
    op.create_table(
        "tours",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("quota", sa.Integer, nullable=False),
        sa.Column("price", MONEY, nullable=False),
        sa.Column("starts_at", TZ, nullable=False),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        # The last line of defence against overselling: no statement can take more seats than are left.
        sa.CheckConstraint("quota >= 0", name="tours_quota_not_negative"),
        sa.CheckConstraint("price >= 0", name="tours_price_not_negative"),
    )
    op.create_table(
        "bookings",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("code", sa.Text, nullable=False, unique=True),
        sa.Column("tour_id", sa.BigInteger, sa.ForeignKey("tours.id"), nullable=False, index=True),
        sa.Column("customer_name", sa.Text, nullable=False),
        sa.Column("customer_email", sa.Text, nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("total_amount", MONEY, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", TZ, nullable=False),
        sa.Column("paid_at", TZ),
        sa.CheckConstraint("quantity > 0", name="bookings_quantity_positive"),
        sa.CheckConstraint("status IN ('pending', 'paid', 'expired', 'cancelled')", name="bookings_status"),
    )
    # The expiry sweep reads only the pending bookings that are due: a small partial index.
    op.create_index(
        "bookings_pending_expires_at", "bookings", ["expires_at"], postgresql_where=sa.text("status = 'pending'")
    )
    op.create_table(
        "payments",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("booking_id", sa.BigInteger, sa.ForeignKey("bookings.id"), nullable=False, index=True),
        sa.Column("order_id", sa.Text, nullable=False),
        sa.Column("transaction_id", sa.Text, nullable=False, server_default=""),
        sa.Column("transaction_status", sa.Text, nullable=False),
        sa.Column("fraud_status", sa.Text, nullable=False, server_default=""),
        sa.Column("status_code", sa.Text, nullable=False),
        sa.Column("gross_amount", MONEY, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("received_at", TZ, nullable=False, server_default=sa.func.now()),
        # The gateway repeats a notification until it gets a 200: the repeat is recognised here.
        sa.UniqueConstraint(
            "order_id", "transaction_status", "fraud_status", "transaction_id", name="payments_one_per_notification"
        ),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("queue_name", sa.Text, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
    )
    # Every statement that adds rows wakes the relays (delivered when its transaction commits), whoever
    # wrote them: the API, a script, or plain SQL.
    op.execute(
        """
        CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            NOTIFY antrian_outbox;
            RETURN NULL;
        END $$;
        CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
        """
    )
    op.create_table(
        "email_deliveries",
        sa.Column("booking_id", sa.BigInteger, sa.ForeignKey("bookings.id"), primary_key=True),
        sa.Column("kind", sa.Text, primary_key=True),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("message_id", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("sent_at", TZ),
        sa.CheckConstraint("kind IN ('invoice', 'eticket')", name="email_deliveries_kind"),
        sa.CheckConstraint("status IN ('pending', 'sent', 'failed')", name="email_deliveries_status"),
    )


def downgrade() -> None:
    for table in ("email_deliveries", "outbox", "payments", "bookings", "tours"):
        op.drop_table(table)
    op.execute("DROP FUNCTION outbox_notify()")

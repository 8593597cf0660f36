"""Refunds: a booking can end ``refunded`` (a refund, a chargeback, a cancel after settlement), and its
customer gets a ``cancellation`` email, once.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_constraint("bookings_status", "bookings", type_="check")
    op.create_check_constraint(
        "bookings_status", "bookings", "status IN ('pending', 'paid', 'expired', 'cancelled', 'refunded')"
    )
    op.drop_constraint("email_deliveries_kind", "email_deliveries", type_="check")
    op.create_check_constraint(
        "email_deliveries_kind", "email_deliveries", "kind IN ('invoice', 'eticket', 'cancellation')"
    )


def downgrade() -> None:
    op.drop_constraint("email_deliveries_kind", "email_deliveries", type_="check")
    op.create_check_constraint("email_deliveries_kind", "email_deliveries", "kind IN ('invoice', 'eticket')")
    op.drop_constraint("bookings_status", "bookings", type_="check")
    op.create_check_constraint("bookings_status", "bookings", "status IN ('pending', 'paid', 'expired', 'cancelled')")

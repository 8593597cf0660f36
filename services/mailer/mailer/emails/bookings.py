"""A booking and its tour, as its emails show them: plain data, so rendering needs no database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, bindparam, select

from antrian.db.models import Booking, Tour


@dataclass(frozen=True, kw_only=True)
class BookingDetails:
    """What the invoice and the e-ticket say about one booking."""

    id: int
    code: str
    status: str
    customer_name: str
    customer_email: str
    quantity: int
    total_amount: Decimal
    #: The payment deadline: an unpaid booking expires then.
    expires_at: datetime
    tour_name: str
    tour_starts_at: datetime


_DETAILS = select(
    Booking.id,
    Booking.code,
    Booking.status,
    Booking.customer_name,
    Booking.customer_email,
    Booking.quantity,
    Booking.total_amount,
    Booking.expires_at,
    Tour.name.label("tour_name"),
    Tour.starts_at.label("tour_starts_at"),
).join(Tour, Tour.id == Booking.tour_id)


_BY_ID = _DETAILS.where(Booking.id == bindparam("booking_id"))


def load_booking(connection: Connection, booking_id: int) -> BookingDetails | None:
    """The booking with its tour, or None when there is no such booking."""
    row = connection.execute(_BY_ID, {"booking_id": booking_id}).one_or_none()
    return None if row is None else BookingDetails(**row._asdict())

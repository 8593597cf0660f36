"""A booking as the API, the ``antrian`` command and the admin page show it, found by its id or its code."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, func, select

from antrian.db.models import Booking, Tour
from antrian.errors import NotFound

#: The columns a booking is shown with (:func:`booking_json`).
BOOKING_COLUMNS = tuple(getattr(Booking, name) for name in (
    "id", "code", "tour_id", "customer_name", "customer_email", "quantity", "total_amount", "status",
    "created_at", "expires_at", "paid_at",
))


class BookingNotFound(NotFound):
    """Raised when a booking is asked for (by id or by code) that does not exist."""

    def __init__(self, booking: int | str) -> None:
        super().__init__(f"booking {booking} not found")


def money(value: Decimal) -> str:
    """Amounts leave the API as strings with two decimals, exactly as the payment gateway writes them."""
    return f"{value:.2f}"


def booking_json(booking: Any) -> dict[str, Any]:
    """A row of :data:`BOOKING_COLUMNS` as the API answers it."""
    return {
        "id": booking.id,
        "code": booking.code,
        "tour_id": booking.tour_id,
        "customer_name": booking.customer_name,
        "customer_email": booking.customer_email,
        "quantity": booking.quantity,
        "total_amount": money(booking.total_amount),
        "status": booking.status,
        "created_at": booking.created_at.isoformat(),
        "expires_at": booking.expires_at.isoformat(),
        "paid_at": booking.paid_at.isoformat() if booking.paid_at else None,
    }


def normal_code(code: str) -> str:
    """A code as it is stored: as a customer reads it out, ignoring case and spaces around it."""
    return code.strip().upper()


def get_booking(engine: Engine, booking_id: int) -> dict[str, Any] | None:
    with engine.connect() as connection:
        booking = connection.execute(select(*BOOKING_COLUMNS).where(Booking.id == booking_id)).one_or_none()
    return None if booking is None else booking_json(booking)


def find_by_code(engine: Engine, code: str | None, *, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Bookings with this code (at most one; ignoring case and spaces around it), or every booking newest first."""
    where = [] if code is None else [Booking.code == normal_code(code)]
    with engine.connect() as connection:
        total = connection.execute(select(func.count()).select_from(Booking).where(*where)).scalar_one()
        rows = connection.execute(
            select(*BOOKING_COLUMNS).where(*where).order_by(Booking.id.desc()).limit(limit).offset(offset)
        ).all()
    return [booking_json(row) for row in rows], total


def find(engine: Engine, code_or_id: str) -> dict[str, Any]:
    """The booking with this id (digits only: a code always has a dash) or code; raises BookingNotFound."""
    wanted = code_or_id.strip()
    is_id = wanted.isascii() and wanted.isdigit()
    if is_id:
        booking = get_booking(engine, int(wanted)) if int(wanted) < 2**63 else None
    else:
        items, _ = find_by_code(engine, wanted, limit=1, offset=0)
        booking = items[0] if items else None
    if booking is None:
        raise BookingNotFound(wanted if is_id else normal_code(wanted))
    return booking


def tour_name(engine: Engine, tour_id: int) -> str | None:
    """The name of the booking's tour (None if it is gone)."""
    with engine.connect() as connection:
        return connection.execute(select(Tour.name).where(Tour.id == tour_id)).scalar_one_or_none()

"""Tours and bookings: a booking takes its seats and queues its invoice in the transaction that creates it."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from antrian import outbox
from antrian.errors import AntrianError
from antrian.messages import SEND_INVOICE_EMAIL
from antrian.models import Booking, Tour
from antrian.seats import take_seats

#: Digits and capitals that no one confuses on a screen or over the phone (no 0/O, 1/I/L, S/5, B/8, Z/2).
CODE_ALPHABET = "2345679ACDEFGHJKMNPQRTUVWXY"
#: Two groups of four, read aloud as "K7QM, 2XH9": 27**8 (2.8e11) codes.
CODE_GROUPS, CODE_GROUP_LENGTH = 2, 4


class TourNotFound(AntrianError):
    def __init__(self, tour_id: int) -> None:
        super().__init__(f"tour {tour_id} not found")


class NotEnoughSeats(AntrianError):
    def __init__(self, tour_id: int, left: int, wanted: int) -> None:
        super().__init__(f"tour {tour_id} has {left} seats left, {wanted} requested")
        self.left = left


def new_code() -> str:
    groups = ("".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_GROUP_LENGTH)) for _ in range(CODE_GROUPS))
    return "-".join(groups)


def money(value: Decimal) -> str:
    """Amounts leave the API as strings with two decimals, exactly as the payment gateway writes them."""
    return f"{value:.2f}"


def tour_json(tour) -> dict[str, Any]:
    return {
        "id": tour.id,
        "name": tour.name,
        "quota": tour.quota,
        "price": money(tour.price),
        "starts_at": tour.starts_at.isoformat(),
    }


def booking_json(booking) -> dict[str, Any]:
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


TOUR_COLUMNS = (Tour.id, Tour.name, Tour.quota, Tour.price, Tour.starts_at)
BOOKING_COLUMNS = tuple(getattr(Booking, name) for name in (
    "id", "code", "tour_id", "customer_name", "customer_email", "quantity", "total_amount", "status",
    "created_at", "expires_at", "paid_at",
))


def create_tour(engine: Engine, *, name: str, quota: int, price: Decimal, starts_at: datetime) -> dict[str, Any]:
    with engine.begin() as connection:
        tour = connection.execute(
            insert(Tour).values(name=name, quota=quota, price=price, starts_at=starts_at).returning(*TOUR_COLUMNS)
        ).one()
    return tour_json(tour)


def create_booking(
    engine: Engine, *, tour_id: int, quantity: int, customer_name: str, customer_email: str, expiry_minutes: int
) -> dict[str, Any]:
    """Take the seats, write the booking and its invoice message, in one transaction.

    Raises :class:`TourNotFound` or :class:`NotEnoughSeats`, having changed nothing.
    """
    with engine.begin() as connection:
        seats = take_seats(connection, tour_id, quantity)
        if seats is None:
            left = connection.execute(select(Tour.quota).where(Tour.id == tour_id)).scalar_one_or_none()
            if left is None:
                raise TourNotFound(tour_id)
            raise NotEnoughSeats(tour_id, left, quantity)
        booking = _insert_booking(
            connection,
            tour_id=tour_id,
            quantity=quantity,
            customer_name=customer_name,
            customer_email=customer_email,
            total_amount=seats.price * quantity,
            expiry=timedelta(minutes=expiry_minutes),
        )
        outbox.add(connection, SEND_INVOICE_EMAIL, booking.id)
    return booking_json(booking)


#: Tries at drawing a code not yet taken; with 2.8e11 codes a second draw is already rare.
CODE_ATTEMPTS = 5


def _insert_booking(connection: Connection, *, expiry: timedelta, **values):
    for _ in range(CODE_ATTEMPTS):
        # expires_at counts from the transaction's clock, the same one that sets created_at.
        statement = (
            pg_insert(Booking)
            .values(code=new_code(), expires_at=func.now() + expiry, **values)
            .on_conflict_do_nothing(index_elements=["code"])
            .returning(*BOOKING_COLUMNS)
        )
        booking = connection.execute(statement).one_or_none()
        if booking is not None:
            return booking
    raise AntrianError(f"no free booking code after {CODE_ATTEMPTS} draws")


def get_booking(engine: Engine, booking_id: int) -> dict[str, Any] | None:
    with engine.connect() as connection:
        booking = connection.execute(select(*BOOKING_COLUMNS).where(Booking.id == booking_id)).one_or_none()
    return None if booking is None else booking_json(booking)

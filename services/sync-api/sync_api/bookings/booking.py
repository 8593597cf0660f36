"""Tours and bookings: a booking takes its seats and queues its invoice in the statement that creates it."""

from __future__ import annotations

import secrets
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from antrian.bookings.records import BookingNotFound as BookingNotFound  # re-exported: it moved to shared/
from antrian.bookings.records import booking_json, money
from antrian.db.engine import is_lock_timeout
from antrian.db.models import Tour
from antrian.errors import AntrianError, Conflict, NotFound, TourBusy
from antrian.messages import SEND_INVOICE_EMAIL

#: Digits and capitals that no one confuses on a screen or over the phone (no 0/O, 1/I/L, S/5, B/8, Z/2).
CODE_ALPHABET = "2345679ACDEFGHJKMNPQRTUVWXY"
#: Two groups of four, read aloud as "K7QM, 2XH9": 27**8 (2.8e11) codes.
CODE_GROUPS, CODE_GROUP_LENGTH = 2, 4


class TourNotFound(NotFound):
    """Raised when a booking names a tour that does not exist."""

    def __init__(self, tour_id: int) -> None:
        super().__init__(f"tour {tour_id} not found")


class NotEnoughSeats(Conflict):
    """Raised when a tour has fewer seats left than a booking asks for."""

    def __init__(self, tour_id: int, left: int, wanted: int) -> None:
        super().__init__(f"not enough seats left: tour {tour_id} has {left} seats left, {wanted} requested")
        self.left = left

    def details(self) -> dict[str, Any]:
        return {"seats_left": self.left}


def new_code() -> str:
    groups = ("".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_GROUP_LENGTH)) for _ in range(CODE_GROUPS))
    return "-".join(groups)


def tour_json(tour) -> dict[str, Any]:
    return {
        "id": tour.id,
        "name": tour.name,
        "quota": tour.quota,
        "price": money(tour.price),
        "starts_at": tour.starts_at.isoformat(),
    }


TOUR_COLUMNS = (Tour.id, Tour.name, Tour.quota, Tour.price, Tour.starts_at)


def create_tour(engine: Engine, *, name: str, quota: int, price: Decimal, starts_at: datetime) -> dict[str, Any]:
    with engine.begin() as connection:
        tour = connection.execute(
            insert(Tour).values(name=name, quota=quota, price=price, starts_at=starts_at).returning(*TOUR_COLUMNS)
        ).one()
    return tour_json(tour)


#: One statement takes the seats, inserts the booking and writes its invoice message. Run outside a
#: transaction block, it commits as it ends: the tour's row lock lasts one statement, not several
#: round trips through Python, so bookings for one tour queue for microseconds, not milliseconds.
#: With too few seats (or no tour) ``seats`` is empty and so is everything after it. The invoice message is
#: encoded before the booking has its id, with :data:`BOOKING_ID_PLACEHOLDER` where the id goes, which the
#: statement puts in: no round trip of its own for the id.
BOOK = text(
    """
    WITH seats AS (
        UPDATE tours SET quota = quota - :quantity WHERE id = :tour_id AND quota >= :quantity RETURNING price
    ), booking AS (
        INSERT INTO bookings (code, tour_id, customer_name, customer_email, quantity, total_amount, expires_at)
        SELECT :code, :tour_id, :customer_name, :customer_email, :quantity, price * :quantity,
               now() + make_interval(mins => :expiry_minutes)
        FROM seats
        RETURNING id, code, tour_id, customer_name, customer_email, quantity, total_amount, status, created_at,
                  expires_at, paid_at
    ), invoice AS (
        INSERT INTO outbox (queue_name, body)
        SELECT :queue_name, convert_to(replace(convert_from(:body, 'UTF8'), :placeholder, id::text), 'UTF8')
        FROM booking
    )
    SELECT * FROM booking
    """
)
#: Where the booking's id goes in its invoice message (a JSON string there, which the id replaces with a number).
BOOKING_ID_PLACEHOLDER = "booking-id-goes-here"

#: Tries at drawing a code not yet taken; with 2.8e11 codes a second draw is already rare.
CODE_ATTEMPTS = 5


def create_booking(
    engine: Engine, *, tour_id: int, quantity: int, customer_name: str, customer_email: str, expiry_minutes: int,
    connection: Connection | None = None,
) -> dict[str, Any]:
    """Take the seats, write the booking and its invoice message, atomically (one statement).

    Raises :class:`TourNotFound` or :class:`NotEnoughSeats`, having changed nothing.

    Given ``connection`` (a transaction the caller holds, e.g. with an idempotency key's row in it), the
    booking commits or rolls back with the caller's transaction, and the tour's row lock lasts until then.
    Each draw of a code is then a savepoint, so that a taken code does not abort the caller's transaction.
    """
    in_transaction = connection is not None
    scope: AbstractContextManager[Connection] = (
        nullcontext(connection) if connection is not None
        else engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    )
    with scope as connection:
        values = {
            "tour_id": tour_id, "quantity": quantity, "customer_name": customer_name,
            "customer_email": customer_email, "expiry_minutes": expiry_minutes, "queue_name": SEND_INVOICE_EMAIL.queue,
            "body": SEND_INVOICE_EMAIL.encode(BOOKING_ID_PLACEHOLDER), "placeholder": f'"{BOOKING_ID_PLACEHOLDER}"',
        }
        for _ in range(CODE_ATTEMPTS):
            try:
                with connection.begin_nested() if in_transaction else nullcontext():
                    booking = connection.execute(BOOK, {**values, "code": new_code()}).one_or_none()
            except IntegrityError as exc:
                if _constraint(exc) == "bookings_code_key":
                    continue  # the whole statement was undone, seats included: draw another code
                raise
            except OperationalError as exc:
                if is_lock_timeout(exc):  # another session held the tour's row for DB_LOCK_TIMEOUT_MS: nothing done
                    raise TourBusy(tour_id) from exc
                raise
            if booking is not None:
                return booking_json(booking)
            left = connection.execute(select(Tour.quota).where(Tour.id == tour_id)).scalar_one_or_none()
            if left is None:
                raise TourNotFound(tour_id)
            raise NotEnoughSeats(tour_id, left, quantity)
    raise AntrianError(f"no free booking code after {CODE_ATTEMPTS} draws")


def _constraint(exc: IntegrityError) -> str | None:
    diag = getattr(exc.orig, "diag", None)
    return getattr(diag, "constraint_name", None)

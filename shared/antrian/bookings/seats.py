"""Seats: a booking takes them from its tour's quota and gives them back exactly once when it ends.

Each runs inside the caller's transaction, so that the seats move together with the booking's
status. The expiry sweep and the payment notifications end bookings here; a late payment takes
the seats again here. A new booking takes its seats in the same statement that inserts it
(``sync_api.bookings.booking``), so that a booking and its seats can never exist apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Connection, text

#: Statuses that end a booking and give its seats back.
ENDED_STATUSES = ("expired", "cancelled")


@dataclass(frozen=True)
class TakenSeats:
    """What a booking needs to know about the tour it took seats from."""

    tour_id: int
    price: Decimal
    quota_left: int


@dataclass(frozen=True)
class EndedBooking:
    id: int
    code: str
    tour_id: int
    quantity: int


@dataclass(frozen=True)
class ExpiredBatch:
    """One batch of the expiry sweep: the bookings it expired (ids and codes, in id order) and the seats given
    back, in all and per tour. Built from one row PostgreSQL aggregates, not one Python object per booking."""

    ids: list[int]
    codes: list[str]
    seats: int
    #: Seats given back per tour id.
    tours: dict[int, int]

    def __len__(self) -> int:
        return len(self.ids)


def take_seats(connection: Connection, tour_id: int, quantity: int) -> TakenSeats | None:
    """Take ``quantity`` seats from the tour, or return None when fewer are left (or no such tour).

    One conditional UPDATE: it locks the tour's row until the caller's transaction ends, so
    concurrent bookings for the last seats queue here and the quota never goes below zero.
    """
    row = connection.execute(
        text("UPDATE tours SET quota = quota - :quantity WHERE id = :tour_id AND quota >= :quantity "
             "RETURNING id, price, quota"),
        {"tour_id": tour_id, "quantity": quantity},
    ).one_or_none()
    return None if row is None else TakenSeats(tour_id=row.id, price=row.price, quota_left=row.quota)


def end_bookings(connection: Connection, booking_ids: Sequence[int], status: str) -> list[EndedBooking]:
    """End the bookings among ``booking_ids`` that are still pending and give their seats back.

    One statement: a booking paid or ended meanwhile is skipped (PostgreSQL re-checks ``status``
    after waiting for a concurrent writer's lock), so each booking's seats come back at most
    once whoever else is ending or paying it. Seats go back with one increment per tour.
    """
    return _end(connection, "SELECT unnest(CAST(:ids AS bigint[])) AS id", status, ids=list(booking_ids))


def expire_due_bookings(connection: Connection, limit: int) -> ExpiredBatch:
    """Expire up to ``limit`` pending bookings whose deadline has passed, oldest first, seats back per tour.

    Bookings locked by someone else right now (a payment being applied, another sweep's batch)
    are skipped, not waited for: they are either paid by then or found by the next sweep.
    NO KEY UPDATE, like the payments: a mailer sending the booking's email holds KEY SHARE on it
    (its delivery row's foreign key), which must not hide the booking from the sweep.

    The statement ends bookings exactly as :func:`end_bookings` does (the same ``ended`` and ``released``);
    only what it returns differs: one row of arrays (ids, codes) and sums instead of a row per booking,
    so that a batch of thousands costs Python one row.
    """
    chosen = (
        "SELECT id FROM bookings WHERE status = 'pending' AND expires_at <= now() "
        "ORDER BY expires_at LIMIT :limit FOR NO KEY UPDATE SKIP LOCKED"
    )
    row = connection.execute(
        text(_ending(chosen, _BATCH_RESULT)), {"status": "expired", "limit": limit}
    ).one()
    return ExpiredBatch(ids=row.ids, codes=row.codes, seats=row.seats,
                        tours={int(tour): seats for tour, seats in (row.tours or {}).items()})


#: What a sweep's batch returns: its expired bookings' ids and codes in id order, their seats, seats per tour.
_BATCH_RESULT = """SELECT coalesce(array_agg(id ORDER BY id), '{}') AS ids,
                   coalesce(array_agg(code ORDER BY id), '{}') AS codes,
                   coalesce(sum(quantity), 0)::bigint AS seats,
                   (SELECT json_object_agg(tour_id, quantity ORDER BY tour_id)
                    FROM (SELECT tour_id, sum(quantity)::bigint AS quantity FROM ended GROUP BY tour_id) AS per_tour
                   ) AS tours
            FROM ended"""


def _end(connection: Connection, chosen: str, status: str, **parameters: object) -> list[EndedBooking]:
    """The one statement both ways of ending bookings share: ``chosen`` selects the candidates' ids."""
    if status not in ENDED_STATUSES:
        raise ValueError(f"a booking ends as one of {ENDED_STATUSES}, not {status!r}")
    rows = connection.execute(
        text(_ending(chosen, "SELECT id, code, tour_id, quantity FROM ended ORDER BY id")),
        {"status": status, **parameters},
    ).all()
    return [EndedBooking(id=row.id, code=row.code, tour_id=row.tour_id, quantity=row.quantity) for row in rows]


def _ending(chosen: str, result: str) -> str:
    """Ending bookings: ``chosen`` selects candidates' ids; those still pending get ``:status`` and their seats go
    back with one increment per tour; ``result`` selects from ``ended`` (the bookings ended) what the caller gets.

    The candidates reach their rows as one array through the primary key: joined to ``chosen`` instead, a batch of
    5,000 was planned as a hash join over a scan of the whole table, once per batch (a third of the sweep's time).
    """
    return f"""
            WITH chosen AS ({chosen}), ended AS (
                UPDATE bookings SET status = :status
                WHERE bookings.id = ANY(ARRAY(SELECT id FROM chosen)) AND bookings.status = 'pending'
                RETURNING bookings.id, bookings.code, bookings.tour_id, bookings.quantity
            ), released AS (
                UPDATE tours SET quota = tours.quota + seats.quantity
                FROM (SELECT tour_id, sum(quantity) AS quantity FROM ended GROUP BY tour_id) AS seats
                WHERE tours.id = seats.tour_id
            )
            {result}
            """


def give_back_seats(connection: Connection, tour_id: int, quantity: int) -> bool:
    """Give a refunded booking's seats back to its tour, unless the tour has started; True if they went back."""
    row = connection.execute(
        text("UPDATE tours SET quota = quota + :quantity WHERE id = :tour_id AND starts_at > now() RETURNING id"),
        {"tour_id": tour_id, "quantity": quantity},
    ).one_or_none()
    return row is not None

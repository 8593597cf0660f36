"""Helpers for booking-expiry tests: bookings in bulk (one SQL statement), log events and metrics of real processes."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text

from antrian.messages import EXPIRE_UNPAID_BOOKINGS
from antrian.runtime.broker import make_broker
from tests.support import (  # noqa: F401 - re-exported for the tests here
    BROKER_URL,
    DATABASE_URL,
    log_events,
    metric,
    settings_for_tests,
)


def expired_named(*logs: str) -> list[str]:
    """The codes of the bookings the sweep's audit lines name (``bookings_expired``, one line per batch), in
    the order logged; a booking named twice appears twice."""
    return [code for line in log_events(*logs, event="bookings_expired") for code in line["codes"]]


#: One statement inserts the bookings and takes their seats from their tours (pending and paid ones hold
#: seats; the others do not), exactly as booking over the API would have. Booking ``g`` goes to tour
#: ``tours[g % len(tours)]`` with ``1 + g % 3`` seats; with ``due="half"`` every other round over the tours is
#: due, so each tour has as many due bookings as not. A due booking's deadline is ``age_minutes`` ago (older
#: for a smaller ``g``, so the sweep's oldest-first order is known); a booking not due has 30 minutes left.
ADD_BOOKINGS = text(
    """
    WITH given AS (SELECT CAST(:tours AS bigint[]) AS ids, CAST(:due AS text) AS due), spec AS (
        SELECT g, ids[1 + g % cardinality(ids)] AS tour_id, 1 + g % 3 AS quantity,
               CASE WHEN due = 'all' OR (due = 'half' AND (g / cardinality(ids)) % 2 = 0)
                    THEN now() - make_interval(mins => :age_minutes) - (:count - g) * interval '1 millisecond'
                    ELSE now() + interval '30 minutes' END AS expires_at
        FROM given, generate_series(0, :count - 1) AS g
    ), booked AS (
        INSERT INTO bookings (code, tour_id, customer_name, customer_email, quantity, total_amount, status,
                              created_at, expires_at, paid_at)
        SELECT CAST(:prefix AS text) || '-' || lpad(g::text, 7, '0'), spec.tour_id, 'Bulk ' || g,
               'bulk' || g || '@example.com', spec.quantity, tours.price * spec.quantity, :status,
               now() - interval '2 hours', spec.expires_at,
               CASE WHEN CAST(:status AS text) = 'paid' THEN now() END
        FROM spec JOIN tours ON tours.id = spec.tour_id
        RETURNING tour_id, quantity, status
    ), taken AS (
        UPDATE tours SET quota = tours.quota - seats.quantity
        FROM (SELECT tour_id, sum(quantity) AS quantity FROM booked WHERE status IN ('pending', 'paid')
              GROUP BY tour_id) AS seats
        WHERE tours.id = seats.tour_id
    )
    SELECT count(*) FROM booked
    """
)


def add_bookings(engine: Engine, tour_ids: list[int], count: int, *, due: str = "all", status: str = "pending",
                 age_minutes: int = 10) -> str:
    """Insert ``count`` bookings in one statement (``due``: "all", "half" or "none"); returns their code prefix."""
    prefix = secrets.token_hex(3).upper()
    with engine.begin() as connection:
        inserted = connection.execute(ADD_BOOKINGS, {
            "tours": tour_ids, "count": count, "due": due, "status": status, "age_minutes": age_minutes,
            "prefix": prefix,
        }).scalar_one()
    assert inserted == count
    return prefix


def bookings_by_status(engine: Engine, where: str = "true", **parameters) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(f"SELECT status, count(*) FROM bookings WHERE {where} GROUP BY status"), parameters
        ).all()
    return dict(rows)


def quotas(engine: Engine) -> dict[int, int]:
    with engine.connect() as connection:
        return dict(connection.execute(text("SELECT id, quota FROM tours")).all())


def send_sweep() -> None:
    """Enqueue one ``expire_unpaid_bookings()`` message, as the scheduler does."""
    settings = settings_for_tests()
    broker = make_broker(settings)
    try:
        EXPIRE_UNPAID_BOOKINGS.send(broker)
    finally:
        broker.close()


def sweep_backend_waiting(engine: Engine) -> bool:
    """A sweep's batch statement is waiting for a lock (the tour row a test holds)."""
    with engine.connect() as connection:
        return connection.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' "
            "AND query LIKE '%WITH chosen AS%'"
        )).scalar_one() > 0


def advisory_locks(engine: Engine) -> int:
    """Advisory locks held in the test database right now (the sweep's is the only kind antrian takes)."""
    with engine.connect() as connection:
        return connection.execute(text(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
            "WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()"
        )).scalar_one()


@contextmanager
def tour_row_locked(engine: Engine, tour_id: int) -> Iterator[None]:
    """Hold the tour's row lock (as a long booking transaction would) until the block ends, changing nothing."""
    with engine.connect() as connection:
        connection.execute(text("SELECT id FROM tours WHERE id = :id FOR UPDATE"), {"id": tour_id})
        try:
            yield
        finally:
            connection.rollback()

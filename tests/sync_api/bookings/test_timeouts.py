"""A booking that cannot get its tour's row answers 503 with Retry-After, at once: it never hangs.

Real sync-api (gunicorn) with a short ``DB_LOCK_TIMEOUT_MS``, real PostgreSQL, and a real second session
that holds the tour's row (``SELECT … FOR UPDATE`` in an open transaction), as a stuck client would.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests
from sqlalchemy import Engine, text

from tests.sync_api.bookings.helpers import book, create_tour, quota

#: Long enough that a request waiting on the lock for ever fails the test instead of passing it.
CLIENT_TIMEOUT_S = 30
BODY = {"quantity": 2, "customer_name": "Budi Santoso", "customer_email": "budi@example.com"}


@contextmanager
def tour_row_held(engine: Engine, tour_id: int) -> Iterator[None]:
    """Another session holds the tour's row lock until the block ends (then rolls back)."""
    with engine.connect() as connection:
        locked = connection.execute(text("SELECT id FROM tours WHERE id = :id FOR UPDATE"), {"id": tour_id}).scalar()
        assert locked == tour_id
        try:
            yield
        finally:
            connection.rollback()


def bookings_of(engine: Engine, tour_id: int) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM bookings WHERE tour_id = :id"), {"id": tour_id}).scalar()


def post_booking(web: str, auth: dict, tour_id: int) -> requests.Response:
    return requests.post(f"{web}/api/bookings", headers=auth, json={"tour_id": tour_id, **BODY},
                         timeout=CLIENT_TIMEOUT_S)


@pytest.fixture
def web(clean, start_web):
    return start_web(DB_LOCK_TIMEOUT_MS="1000")


def test_a_booking_for_a_tour_whose_row_is_held_is_a_503_and_changes_nothing(web, auth, engine):
    busy, other = create_tour(web, auth, quota=10), create_tour(web, auth, quota=10)
    with tour_row_held(engine, busy["id"]):
        # The request comes back (within the client's timeout: it would fail here if it hung) ...
        response = post_booking(web, auth, busy["id"])
        assert response.status_code == 503, response.text
        assert response.json() == {"error": f"tour {busy['id']} is busy; try again shortly"}
        assert int(response.headers["Retry-After"]) >= 1
        # ... having booked nothing and taken no seat.
        assert bookings_of(engine, busy["id"]) == 0
        assert quota(engine, busy["id"]) == 10
        # Meanwhile another tour books as usual.
        response = book(web, auth, other["id"])
        assert response.status_code == 201, response.text
        assert quota(engine, other["id"]) == 8
    # Once the row is free again, the same booking goes through.
    response = post_booking(web, auth, busy["id"])
    assert response.status_code == 201, response.text
    assert bookings_of(engine, busy["id"]) == 1 and quota(engine, busy["id"]) == 8


def test_a_statement_timeout_is_a_503_with_retry_after_too(clean, start_web, auth, engine):
    # No lock timeout: the statement timeout is what stops the wait (57014, not 55P03), on any route.
    web = start_web(DB_LOCK_TIMEOUT_MS="0", DB_STATEMENT_TIMEOUT_MS="1000")
    tour = create_tour(web, auth, quota=10)
    with tour_row_held(engine, tour["id"]):
        response = post_booking(web, auth, tour["id"])
        assert response.status_code == 503, response.text
        assert response.json() == {"error": "the database is busy; try again shortly"}
        assert int(response.headers["Retry-After"]) >= 1
        assert bookings_of(engine, tour["id"]) == 0 and quota(engine, tour["id"]) == 10
    assert post_booking(web, auth, tour["id"]).status_code == 201

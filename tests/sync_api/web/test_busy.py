"""A lock or statement timeout is a 503 with Retry-After, through the one handler of antrian's errors.

Fast tier: the application in process (Flask's test client), with the booking service replaced by one
that raises what PostgreSQL's timeouts raise (the real thing: tests/sync_api/bookings/test_timeouts.py).
"""

from __future__ import annotations

import pytest
from psycopg import errors as pg_errors
from sqlalchemy.exc import OperationalError

from antrian.errors import AntrianError, Busy, DependencyUnavailable, TourBusy
from sync_api.bookings import booking as bookings
from tests.sync_api.web.conftest import AUTH

pytestmark = pytest.mark.fast

BOOKING = {"tour_id": 7, "quantity": 3, "customer_name": "Budi", "customer_email": "budi@example.com"}


def _raising(monkeypatch, exc: BaseException) -> None:
    def create_booking(*args, **kwargs):
        raise exc

    monkeypatch.setattr(bookings, "create_booking", create_booking)


def _timed_out(orig: Exception) -> OperationalError:
    """What SQLAlchemy raises when PostgreSQL gives up on a statement."""
    return OperationalError("UPDATE tours SET quota = quota - %(quantity)s ...", {"quantity": 3}, orig)


def test_an_error_that_says_when_to_try_again_carries_retry_after():
    assert TourBusy(7).headers() == {"Retry-After": "2"} and issubclass(TourBusy, Busy) and Busy.status == 503
    assert AntrianError("x").headers() == {} and DependencyUnavailable("x").headers() == {}

    class Upstream(DependencyUnavailable):
        def __init__(self, retry_after_s: float) -> None:
            super().__init__("later")
            self.retry_after_s = retry_after_s

    assert Upstream(1.2).headers() == {"Retry-After": "2"}  # whole seconds, rounded up


def test_a_booking_whose_tour_is_busy_is_a_503_with_retry_after(client, monkeypatch):
    _raising(monkeypatch, TourBusy(7))
    response = client.post("/api/bookings", headers=AUTH, json=BOOKING)
    assert response.status_code == 503
    assert response.get_json() == {"error": "tour 7 is busy; try again shortly"}
    assert response.headers["Retry-After"] == "2"


@pytest.mark.parametrize("orig", [pg_errors.LockNotAvailable("canceling statement due to lock timeout"),
                                  pg_errors.QueryCanceled("canceling statement due to statement timeout")])
def test_a_timeout_anywhere_is_a_503_with_retry_after_not_a_500(client, monkeypatch, orig):
    _raising(monkeypatch, _timed_out(orig))
    response = client.post("/api/bookings", headers=AUTH, json=BOOKING)
    assert response.status_code == 503
    assert response.get_json() == {"error": "the database is busy; try again shortly"}
    assert response.headers["Retry-After"] == "2"


def test_a_database_that_cannot_be_reached_is_still_a_503_without_retry_after(client, monkeypatch):
    _raising(monkeypatch, _timed_out(pg_errors.OperationalError("connection refused")))
    response = client.post("/api/bookings", headers=AUTH, json=BOOKING)
    assert response.status_code == 503 and "unavailable" in response.get_json()["error"]
    assert "Retry-After" not in response.headers

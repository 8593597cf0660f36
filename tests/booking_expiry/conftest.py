"""Fixtures for booking-expiry: tours whose starting seats are recorded, and the seat invariant checked after each test.

The invariant: for every tour, ``quota`` + the seats of its pending and paid bookings = the seats it started
with. Every tour a test creates goes through ``tours`` (``tours.add`` in SQL, ``tours.track`` for one made
over HTTP); after the test, every tour in the database must be known and add up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, text

from tests.support import BIN, Service, base_env, wait_until


class Tours:
    """The tours of one test and the seats each started with."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.started_with: dict[int, int] = {}
        self._lock = threading.Lock()

    def add(self, count: int = 1, *, quota: int = 100, price: int = 500_000) -> list[int]:
        """Insert ``count`` tours of ``quota`` seats each, in one statement; returns their ids."""
        with self.engine.begin() as connection:
            ids = connection.execute(
                text("INSERT INTO tours (name, quota, price, starts_at) "
                     "SELECT 'Tour ' || g, :quota, :price, now() + interval '30 days' FROM generate_series(1, :n) g "
                     "RETURNING id"),
                {"quota": quota, "price": price, "n": count},
            ).scalars().all()
        for tour_id in ids:
            self.track(tour_id, quota)
        return ids

    def track(self, tour_id: int, seats: int) -> None:
        """Record a tour made some other way (over HTTP) with the seats it was created with."""
        with self._lock:
            assert tour_id not in self.started_with, f"tour {tour_id} tracked twice"
            self.started_with[tour_id] = seats

    def violations(self, tour_ids=None) -> list[str]:
        """What breaks the invariant now (all tours, or only ``tour_ids``); empty when it holds."""
        with self.engine.connect() as connection:
            rows = connection.execute(text(
                "SELECT t.id, t.quota, coalesce(sum(b.quantity) FILTER (WHERE b.status IN ('pending', 'paid')), 0) "
                "AS held FROM tours t LEFT JOIN bookings b ON b.tour_id = t.id "
                + ("WHERE t.id = ANY(:ids) " if tour_ids is not None else "")
                + "GROUP BY t.id ORDER BY t.id"
            ), {"ids": list(tour_ids or [])}).all()
            # A booking that ended (expired or cancelled) yet carries a payment time was both paid and ended.
            both = connection.execute(text(
                "SELECT code, status FROM bookings WHERE status IN ('expired', 'cancelled') AND paid_at IS NOT NULL "
                + ("AND tour_id = ANY(:ids) " if tour_ids is not None else "")
                + "LIMIT 5"
            ), {"ids": list(tour_ids or [])}).all()
        problems = []
        for row in rows:
            started = self.started_with.get(row.id)
            if started is None:
                problems.append(f"tour {row.id} was not created through the tours fixture")
            elif row.quota + row.held != started:
                problems.append(f"tour {row.id}: quota {row.quota} + held {row.held} != {started} seats at start")
        problems += [f"booking {row.code} is {row.status} and was paid" for row in both]
        return problems

    def assert_seats_add_up(self, tour_ids=None) -> None:
        problems = self.violations(tour_ids)
        assert not problems, "seat invariant broken:\n" + "\n".join(problems)


@pytest.fixture
def tours(clean: Engine) -> Tours:
    return Tours(clean)


@pytest.fixture(autouse=True)
def seats_add_up(tours: Tours) -> Iterator[None]:
    """After every test here: each tour's quota + its pending and paid bookings' seats = its starting seats."""
    yield
    tours.assert_seats_add_up()


@pytest.fixture
def start_expiry_worker(start_dramatiq) -> Callable[..., Service]:
    """Start a real ``booking-expiry`` worker (Dramatiq, queue booking-expiry); ``.metrics_url`` is set."""

    def start(*, processes: int = 1, threads: int = 2, **env: str) -> Service:
        return start_dramatiq("booking-expiry", processes=processes, threads=threads, **env)

    return start


@pytest.fixture
def start_scheduler(services, tmp_path) -> Callable[..., Service]:
    """Start a real ``booking-expiry-scheduler`` (``antrian schedule work``); returns once it says it started."""
    count = 0

    def start(**env: str) -> Service:
        nonlocal count
        count += 1
        service = Service(f"booking-expiry-scheduler-{count}", [str(BIN / "booking-expiry-scheduler")],
                          base_env(**env), tmp_path)
        services.append(service.start())
        wait_until(lambda: _started(service), timeout=30, what=f"{service.name} to start")
        return service

    return start


def _started(service: Service) -> bool:
    if service.process.poll() is not None:
        raise AssertionError(f"{service.name} exited with {service.process.returncode}:\n{service.log()[-3000:]}")
    return "scheduler started" in service.log()

"""The sweep through the real ``booking-expiry`` worker: thousands of bookings, overlapping sweeps, a SIGKILL."""

from __future__ import annotations

import time

from sqlalchemy import text

from tests.booking_expiry.helpers import (
    add_bookings,
    advisory_locks,
    bookings_by_status,
    expired_named,
    log_events,
    metric,
    quotas,
    send_sweep,
    sweep_backend_waiting,
    tour_row_locked,
)
from tests.support import queue_depth, wait_until


def test_one_sweep_expires_exactly_the_due_bookings_of_10000_and_gives_their_seats_back(tours, start_expiry_worker):
    engine = tours.engine
    # Given 20 tours and 10,000 pending bookings spread over them, every second one past its deadline,
    # and beside them paid and cancelled bookings whose deadlines passed too (the sweep leaves them alone)
    tour_ids = tours.add(20, quota=2_000)
    add_bookings(engine, tour_ids, 10_000, due="half")
    add_bookings(engine, tour_ids, 200, due="all", status="paid")
    add_bookings(engine, tour_ids, 100, due="all", status="cancelled")
    with engine.connect() as connection:
        due = {row.code: (row.tour_id, row.quantity) for row in connection.execute(text(
            "SELECT code, tour_id, quantity FROM bookings WHERE status = 'pending' AND expires_at <= now()"
        ))}
        per_tour = dict(connection.execute(text(
            "SELECT tour_id, sum(quantity) FROM bookings WHERE status = 'pending' AND expires_at <= now() "
            "GROUP BY tour_id"
        )).all())
    assert len(due) == 5_000
    before = quotas(engine)
    worker = start_expiry_worker()
    started_at = time.time()

    # When one sweep message reaches the worker
    send_sweep()
    wait_until(lambda: log_events(worker.log(), event="sweep_done"), timeout=60, what="the sweep to finish")

    # Then exactly the due pending bookings are expired, and nothing else changed
    assert bookings_by_status(engine) == {"expired": 5_000, "pending": 5_000, "paid": 200, "cancelled": 100}
    assert bookings_by_status(engine, "status = 'pending' AND expires_at <= now()") == {}
    with engine.connect() as connection:
        expired = set(connection.execute(text("SELECT code FROM bookings WHERE status = 'expired'")).scalars())
    assert expired == set(due)

    # And each tour got exactly the seats of its expired bookings back (the invariant is checked after the test too)
    after = quotas(engine)
    assert {tour: after[tour] - before[tour] for tour in tour_ids} == {tour: per_tour[tour] for tour in tour_ids}

    # And the audit lines (one per batch) name every expired booking exactly once, with ids matching codes,
    # and say how many seats each tour got back
    lines = log_events(worker.log(), event="bookings_expired")
    named = expired_named(worker.log())
    assert len(named) == len(set(named)) == 5_000 and set(named) == set(due)
    assert sum(line["count"] for line in lines) == 5_000
    with engine.connect() as connection:
        by_id = dict(connection.execute(text("SELECT id, code FROM bookings WHERE status = 'expired'")).all())
    assert {i: c for line in lines for i, c in zip(line["ids"], line["codes"], strict=True)} == by_id
    seats_per_tour: dict[int, int] = {}
    for line in lines:
        for tour, seats in line["tours"].items():
            seats_per_tour[int(tour)] = seats_per_tour.get(int(tour), 0) + seats
    assert seats_per_tour == {tour: per_tour[tour] for tour in tour_ids}
    [done] = log_events(worker.log(), event="sweep_done")
    assert (done["expired"], done["seats"]) == (5_000, sum(per_tour.values()))

    # And the worker's metrics say the same
    url = worker.metrics_url
    assert metric(url, "antrian_bookings_expired_total") == 5_000
    assert metric(url, "antrian_seats_released_total") == sum(per_tour.values())
    assert metric(url, "antrian_expiry_sweep_seconds_count") == 1
    assert 0 < metric(url, "antrian_expiry_sweep_seconds_sum") < 60
    assert metric(url, "antrian_expiry_sweeps_skipped_total") == 0
    assert started_at - 1 <= metric(url, "antrian_expiry_last_success_timestamp_seconds") <= time.time()


def test_two_sweeps_in_two_worker_processes_at_once_one_works_and_one_skips(tours, start_expiry_worker):
    # Given two booking-expiry workers that each take one message at a time, and 1,000 due bookings, one of
    # whose tours is held by a long booking transaction so that the first sweep stays inside its batch
    engine = tours.engine
    tour_ids = tours.add(4, quota=1_000)
    add_bookings(engine, tour_ids, 1_000)
    workers = [start_expiry_worker(threads=1, dramatiq_queue_prefetch="1") for _ in range(2)]
    logs = lambda: [worker.log() for worker in workers]  # noqa: E731
    with tour_row_locked(engine, tour_ids[0]):
        # When a sweep starts in one of them, and a second sweep message comes while it runs
        send_sweep()
        wait_until(lambda: sweep_backend_waiting(engine), timeout=30, what="the first sweep inside its batch")
        send_sweep()

        # Then the other worker skips it at once, saying so, and nothing is expired meanwhile
        wait_until(lambda: log_events(*logs(), event="sweep_skipped"), timeout=30, what="the second sweep to skip")
        assert bookings_by_status(engine) == {"pending": 1_000}
    wait_until(lambda: log_events(*logs(), event="sweep_done"), timeout=30, what="the first sweep to finish")

    # And the first expires every due booking, once: each named once in its audit lines, all from one worker
    assert bookings_by_status(engine) == {"expired": 1_000}
    per_worker = [(len(expired_named(log)), len(log_events(log, event="sweep_skipped"))) for log in logs()]
    assert sorted(per_worker) == [(0, 1), (1_000, 0)]
    codes = expired_named(*logs())
    assert len(set(codes)) == len(codes) == 1_000
    skipped = [metric(worker.metrics_url, "antrian_expiry_sweeps_skipped_total") for worker in workers]
    expired = [metric(worker.metrics_url, "antrian_bookings_expired_total") for worker in workers]
    assert sorted(zip(expired, skipped, strict=True)) == [(0, 1), (1_000, 0)]


def test_a_sweep_killed_inside_a_batch_leaves_it_undone_and_the_next_sweep_finishes(tours, start_expiry_worker):
    engine = tours.engine
    # Given 5,000 bookings due for an hour on tour A (the sweep's first batch, oldest first), 4,000 due for
    # 10 minutes on tours B and C (its second batch), and 1,000 not yet due on tour D
    a, b, c, d = tours.add(4, quota=10_000)
    add_bookings(engine, [a], 5_000, age_minutes=60)
    add_bookings(engine, [b, c], 4_000, age_minutes=10)
    add_bookings(engine, [d], 1_000, due="none")
    worker = start_expiry_worker()
    with tour_row_locked(engine, c):
        # When the sweep has committed its first batch and is inside its second, waiting for tour C's row
        send_sweep()
        wait_until(lambda: sweep_backend_waiting(engine), timeout=30, what="the sweep inside its second batch")
        assert bookings_by_status(engine, "tour_id = :a", a=a) == {"expired": 5_000}
        # batch 1's audit line (over 64 KB) may still be on its way through Dramatiq's log pipe
        wait_until(lambda: len(set(expired_named(worker.log()))) == 5_000, timeout=10, what="batch 1's audit line")
        quota_b = quotas(engine)[b]

        # And the worker is killed there (SIGKILL, every process of it)
        worker.kill()
        # Its connection's backend, still waiting for the row, holds the sweep's lock until it notices
        assert advisory_locks(engine) == 1
    # Then once the row is free, the backend finds its client gone: it rolls the batch back and lets the lock go
    wait_until(lambda: advisory_locks(engine) == 0, timeout=30, what="the killed sweep's lock to be released")

    # And nothing of the killed batch was committed: B and C's bookings all pending, their seats still taken
    assert bookings_by_status(engine, "tour_id IN (:b, :c)", b=b, c=c) == {"pending": 4_000}
    assert quotas(engine)[b] == quota_b
    tours.assert_seats_add_up()

    # And the killed sweep's message is back on the queue (RabbitMQ requeues what a dead worker never
    # acknowledged): a new worker runs it, takes the lock and finishes the job
    wait_until(lambda: queue_depth("booking-expiry") == 1, timeout=10, what="the killed sweep's message requeued")
    again = start_expiry_worker()
    wait_until(lambda: log_events(again.log(), event="sweep_done"), timeout=60, what="the next sweep to finish")
    assert bookings_by_status(engine) == {"expired": 9_000, "pending": 1_000}
    assert bookings_by_status(engine, "status = 'pending' AND expires_at <= now()") == {}
    assert metric(again.metrics_url, "antrian_bookings_expired_total") == 4_000
    assert metric(again.metrics_url, "antrian_expiry_sweeps_skipped_total") == 0
    # And the new worker's audit lines name exactly the 4,000 it expired, the killed batch's among them
    with engine.connect() as connection:
        second = set(connection.execute(text("SELECT code FROM bookings WHERE status = 'expired' AND tour_id <> :a"),
                                        {"a": a}).scalars())
    assert sorted(expired_named(again.log())) == sorted(second)

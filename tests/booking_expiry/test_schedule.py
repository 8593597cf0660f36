"""The schedule: the sweep enqueued every EXPIRY_SWEEP_SECONDS by real schedulers, once per slot, and what it does."""

from __future__ import annotations

import math
import subprocess
import threading
import time
from datetime import datetime

import dramatiq.errors
import pytest
import requests
from sqlalchemy import text

from antrian import schedule
from antrian.errors import DependencyUnavailable
from antrian.runtime.broker import make_broker
from tests.booking_expiry.helpers import log_events, metric
from tests.support import (
    BIN,
    ROOT,
    base_env,
    queue_depth,
    settings_for_tests,
    take_messages,
    wait_until,
)
from tests.sync_api.bookings.helpers import book, create_tour, quota

#: The sweep's period in these tests: short, so that a test sees several slots in seconds.
SWEEP_S = 2


def enqueued(*services) -> list[float]:
    """When each ``task_enqueued`` line of these schedulers for the sweep was written (Unix time, the machine's
    clock)."""
    return sorted(
        datetime.strptime(line["time"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        for line in log_events(*(service.log() for service in services), event="task_enqueued")
        if line["task"] == "expire-unpaid-bookings"
    )


def sweep_only(settings) -> list[schedule.ScheduledTask]:
    """The schedule's sweep alone (the reconciliation of payments has its own tests)."""
    return [task for task in schedule.tasks(settings) if task.name == "expire-unpaid-bookings"]


def test_an_unpaid_booking_expires_on_its_own_and_its_seats_come_back(
    tours, start_web, auth, start_expiry_worker, start_scheduler
):
    # Given sync-api, a booking-expiry worker and its scheduler, all real processes, sweeping every 2 s
    web = start_web(BOOKING_EXPIRY_MINUTES="1")
    worker = start_expiry_worker()
    scheduler = start_scheduler(EXPIRY_SWEEP_SECONDS=str(SWEEP_S))
    tour = create_tour(web, auth, quota=10)
    tours.track(tour["id"], 10)

    # When a customer books 3 seats and does not pay
    booking = book(web, auth, tour["id"], quantity=3).json()
    assert booking["status"] == "pending" and quota(tours.engine, tour["id"]) == 7
    created = requests.get(f"{web}/api/bookings/{booking['id']}", headers=auth).json()
    deadline = datetime.fromisoformat(created["expires_at"]) - datetime.fromisoformat(created["created_at"])
    assert deadline.total_seconds() == 60  # BOOKING_EXPIRY_MINUTES=1
    # Two sweeps end meanwhile (so the second surely began after the booking) and leave it alone: its minute is
    # not up
    swept = len(log_events(worker.log(), event="sweep_done"))
    wait_until(lambda: len(log_events(worker.log(), event="sweep_done")) >= swept + 2, timeout=30, what="two sweeps")
    assert requests.get(f"{web}/api/bookings/{booking['id']}", headers=auth).json()["status"] == "pending"

    # And its minute passes: moved into the past with SQL, so that the test need not wait the minute out
    with tours.engine.begin() as connection:
        connection.execute(text("UPDATE bookings SET expires_at = now() - interval '1 second' WHERE id = :id"),
                           {"id": booking["id"]})
    moved = time.monotonic()

    # Then it expires on its own within a couple of sweep intervals, and its seats come back
    wait_until(
        lambda: requests.get(f"{web}/api/bookings/{booking['id']}", headers=auth).json()["status"] == "expired",
        timeout=3 * SWEEP_S + 2, interval=0.2, what="the booking to expire on its own",
    )
    assert time.monotonic() - moved < 2 * SWEEP_S + 1.5
    assert quota(tours.engine, tour["id"]) == 10
    # the audit line comes after the commit, through Dramatiq's log pipe
    [line] = wait_until(lambda: log_events(worker.log(), event="bookings_expired"), timeout=10,
                        what="the sweep's audit line")
    assert (line["codes"], line["ids"], line["tours"], line["seats"]) == (
        [booking["code"]], [booking["id"]], {str(tour["id"]): 3}, 3)

    # And the scheduler enqueued the sweep more than once, and the worker ran each of them
    times = enqueued(scheduler)
    assert len(times) >= 2
    wait_until(lambda: metric(worker.metrics_url, "antrian_expiry_sweep_seconds_count") >= len(times), timeout=10,
               what="the worker to have run every sweep enqueued")
    assert metric(worker.metrics_url, "antrian_bookings_expired_total") == 1
    assert metric(worker.metrics_url, "antrian_seats_released_total") == 3
    assert metric(worker.metrics_url, "antrian_expiry_last_success_timestamp_seconds") > time.time() - 3 * SWEEP_S


def test_two_schedulers_running_at_once_enqueue_the_sweep_once_per_slot(tours, start_scheduler):
    # Given two schedulers of the same 2 s sweep, running at once (as two replicas would)
    schedulers = [start_scheduler(EXPIRY_SWEEP_SECONDS=str(SWEEP_S)) for _ in range(2)]

    # When four whole slots pass, from the first slot boundary 1.5 s after both started (so that what they
    # enqueued as they started, mid-slot, lies nearer an earlier boundary)
    first = math.ceil((time.time() + 1.5) / SWEEP_S) * SWEEP_S
    last = first + 4 * SWEEP_S
    time.sleep(last + 0.8 - time.time())
    assert all(scheduler.process.poll() is None for scheduler in schedulers)
    for scheduler in schedulers:
        scheduler.stop()
    # Then each of the four slots was enqueued exactly once, by one scheduler or the other: each enqueue comes
    # near its slot's boundary (a scheduler wakes just after it; a slot may also be claimed a little early),
    # so the nearest boundary names its slot
    slots = sorted(round(moment / SWEEP_S) for moment in enqueued(*schedulers))
    in_window = [slot for slot in slots if first // SWEEP_S <= slot < last // SWEEP_S]
    assert in_window == list(range(first // SWEEP_S, last // SWEEP_S)), slots
    # And RabbitMQ holds exactly one message per enqueue they logged, every one the sweep
    messages = [message for message in take_messages("booking-expiry")
                if message["actor_name"] not in ("reconcile_payments", "prune_failed_jobs")]
    assert len(messages) == len(slots)
    assert {(message["actor_name"], tuple(message["args"])) for message in messages} == {("expire_unpaid_bookings", ())}


def test_many_schedule_runs_at_the_same_instant_enqueue_the_sweep_once(tours):
    # Given the real schedule (every hour, so that this slot does not end during the test) and ten callers
    settings = settings_for_tests(expiry_sweep_seconds=3600)
    broker = make_broker(settings)
    barrier = threading.Barrier(10)
    results: list[list[str]] = []

    def run():
        barrier.wait()
        results.append(schedule.run_due(tours.engine, broker, sweep_only(settings)))

    try:
        # When they all run what is due at the same instant (a scheduler, a CronJob, an operator...)
        threads = [threading.Thread(target=run) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        broker.close()
    # Then exactly one enqueued the sweep, and one message is on its queue
    assert sorted(results) == [[]] * 9 + [["expire-unpaid-bookings"]]
    wait_until(lambda: queue_depth("booking-expiry") == 1, timeout=5, what="the sweep message")
    assert len(take_messages("booking-expiry")) == 1


def test_the_scheduler_and_the_worker_with_bad_settings_stop_with_one_line(tours):
    # A bad period stops the scheduler with exit code 2 and one line naming the variable
    result = subprocess.run([str(BIN / "booking-expiry-scheduler")], env=base_env(EXPIRY_SWEEP_SECONDS="0"), cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("booking-expiry-scheduler: EXPIRY_SWEEP_SECONDS=") and "Traceback" not in result.stderr

    # An unreachable broker stops the worker with exit code 3 and one line naming it
    result = subprocess.run([str(BIN / "booking-expiry")], env=base_env(BROKER_URL="amqp://guest:guest@127.0.0.1:1/"),
                            cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 3, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("booking-expiry: cannot reach the broker at amqp://127.0.0.1:1/"), line


class UnreachableBroker:
    """A broker whose every enqueue fails, as RabbitMQ going away between the claim and the publish would."""

    def enqueue(self, message, *, delay=None):
        raise dramatiq.errors.ConnectionClosed(ConnectionError("RabbitMQ is away"))


def test_an_enqueue_that_fails_gives_its_slot_back_for_the_next_tick(tours):
    settings = settings_for_tests(expiry_sweep_seconds=3600)
    scheduled = sweep_only(settings)
    # When the publish fails after the slot was claimed, the claim is rolled back with it
    # and the caller (antrian schedule run, the scheduler's loop) gets one line naming RabbitMQ
    with pytest.raises(DependencyUnavailable, match="cannot enqueue expire-unpaid-bookings: RabbitMQ did not take it"):
        schedule.run_due(tours.engine, UnreachableBroker(), scheduled)
    [status] = schedule.status(tours.engine, scheduled)
    assert status.last_enqueued_at is None and status.next_due_at == status.now
    # So the next tick, RabbitMQ back, enqueues the sweep of this very slot
    broker = make_broker(settings)
    try:
        assert schedule.run_due(tours.engine, broker, scheduled) == ["expire-unpaid-bookings"]
    finally:
        broker.close()
    wait_until(lambda: queue_depth("booking-expiry") == 1, timeout=5, what="the sweep message")

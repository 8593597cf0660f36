"""The sweep in this process against the real PostgreSQL: overlapping sweeps, batches, and the race with a payment."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections import Counter

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import create_engine, func, select, text

from antrian.bookings import payments
from booking_expiry.bookings import sweep
from mailer.emails.deliveries import Deliveries
from mailer.emails.render import INVOICE, Sender
from tests.booking_expiry.helpers import (
    add_bookings,
    advisory_locks,
    bookings_by_status,
    sweep_backend_waiting,
    tour_row_locked,
)
from tests.support import DATABASE_URL, wait_until


def skipped_total() -> float:
    return REGISTRY.get_sample_value("antrian_expiry_sweeps_skipped_total") or 0.0


def skip_lines(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records if getattr(record, "event", None) == "sweep_skipped"]


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.INFO, logger="booking_expiry.bookings.sweep")
    return caplog


def test_a_sweep_skips_at_once_while_another_holds_the_lock_and_runs_once_it_is_free(tours, logs):
    engine = tours.engine
    [tour] = tours.add(quota=500)
    add_bookings(engine, [tour], 100)
    skipped = skipped_total()

    # Given another sweep holding the sweep's advisory lock (a third connection, standing in for it)
    with engine.connect() as other:
        assert other.execute(select(func.pg_try_advisory_lock(sweep.SWEEP_LOCK))).scalar_one()
        other.commit()

        # When a sweep starts, it returns at once, having done nothing, and says so in its log and metric
        started = time.perf_counter()
        result = sweep.sweep(engine)
        assert time.perf_counter() - started < 1
        assert result == sweep.SweepResult(ran=False)
        assert bookings_by_status(engine) == {"pending": 100}
        assert skipped_total() == skipped + 1
        [line] = skip_lines(logs)
        assert "another sweep is running" in line.getMessage()

        other.execute(select(func.pg_advisory_unlock(sweep.SWEEP_LOCK)))
        other.commit()

    # Then, the lock free, the next sweep does the work
    result = sweep.sweep(engine)
    assert (result.ran, result.expired, result.batches) == (True, 100, 1)
    assert bookings_by_status(engine) == {"expired": 100}
    assert skipped_total() == skipped + 1


def test_a_second_sweep_skips_while_the_first_is_inside_a_batch(tours, logs):
    # Given due bookings, one of whose tours is locked by a booking transaction that takes a while
    engine = tours.engine
    tour_ids = tours.add(2, quota=1_000)
    add_bookings(engine, tour_ids, 300)
    first: list[sweep.SweepResult] = []
    with tour_row_locked(engine, tour_ids[1]):
        # When a first sweep starts and waits inside its batch statement for that tour's row
        running = threading.Thread(target=lambda: first.append(sweep.sweep(engine)))
        running.start()
        wait_until(lambda: sweep_backend_waiting(engine), timeout=10, what="the first sweep to wait inside its batch")

        # Then a second sweep skips at once, without touching a booking
        started = time.perf_counter()
        assert sweep.sweep(engine) == sweep.SweepResult(ran=False)
        assert time.perf_counter() - started < 1
        assert bookings_by_status(engine) == {"pending": 300}
        assert len(skip_lines(logs)) == 1
    # And once the tour is free the first sweep expires every due booking, once
    running.join(30)
    assert [(result.ran, result.expired) for result in first] == [(True, 300)]
    assert bookings_by_status(engine) == {"expired": 300}


def test_two_sweeps_started_at_the_same_instant_one_works_one_skips(tours, logs):
    engine = tours.engine
    tour_ids = tours.add(5, quota=10_000)
    skipped = skipped_total()
    for _ in range(5):
        # Given 2,000 due bookings: in batches of 50 a sweep takes long enough for the other to start meanwhile
        add_bookings(engine, tour_ids, 2_000)
        barrier = threading.Barrier(2)
        results: list[sweep.SweepResult] = []

        def run(barrier=barrier, results=results):
            barrier.wait()
            results.append(sweep.sweep(engine, batch_size=50))

        # When two threads start a sweep at the same instant
        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

        # Then one expires all 2,000 in 40 batches, the other skips, and nothing was expired twice
        assert sorted((r.ran, r.expired, r.batches) for r in results) == [(False, 0, 0), (True, 2_000, 40)]
        assert bookings_by_status(engine, "status = 'pending'") == {}
        tours.assert_seats_add_up()
    assert skipped_total() == skipped + 5
    assert len(skip_lines(logs)) == 5


def test_the_sweep_expires_in_batches_of_its_size_and_only_what_is_due(tours):
    engine = tours.engine
    tour_ids = tours.add(3, quota=5_000)
    add_bookings(engine, tour_ids, 2_500, due="all")
    add_bookings(engine, tour_ids, 700, due="none")
    add_bookings(engine, tour_ids, 300, due="all", status="paid")
    result = sweep.sweep(engine, batch_size=1_000)
    # 2,500 due: batches of 1,000, 1,000 and 500 (the short one ends the sweep)
    assert (result.ran, result.expired, result.batches) == (True, 2_500, 3)
    assert bookings_by_status(engine) == {"expired": 2_500, "pending": 700, "paid": 300}
    # A sweep with nothing due runs and changes nothing
    assert sweep.sweep(engine) == sweep.SweepResult(ran=True, expired=0, seats=0, batches=0,
                                                    seconds=pytest.approx(0, abs=1))



@pytest.fixture
def audit_lines():
    """The sweep's log lines as the worker writes them (antrian.logging's JSON), parsed back."""
    from antrian.logging import json_formatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter("booking-expiry"))
    logger = logging.getLogger("booking_expiry.bookings.sweep")
    saved = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lambda event: [line for line in map(json.loads, stream.getvalue().splitlines())
                             if line.get("event") == event]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)


def test_the_audit_lines_name_every_expired_booking_exactly_once_one_line_per_batch(tours, audit_lines):
    # Given 12,000 due bookings over 7 tours (three batches of the default 5,000: 5,000, 5,000 and 2,000),
    # beside 1,000 not yet due and 500 paid ones past their deadline
    engine = tours.engine
    tour_ids = tours.add(7, quota=10_000)
    add_bookings(engine, tour_ids, 12_000, due="all")
    add_bookings(engine, tour_ids, 1_000, due="none")
    add_bookings(engine, tour_ids, 500, due="all", status="paid")
    with engine.connect() as connection:
        per_tour = dict(connection.execute(text(
            "SELECT tour_id, sum(quantity) FROM bookings WHERE status = 'pending' AND expires_at <= now() "
            "GROUP BY tour_id")).all())

    # When one sweep runs
    result = sweep.sweep(engine)
    assert (result.expired, result.batches) == (12_000, 3)

    # Then one JSON line per batch, in order, says how many it expired, and the union of the codes the lines
    # list is exactly the set of bookings now expired: none missing, none extra, none named twice
    lines = audit_lines("bookings_expired")
    assert [(line["batch"], line["count"], len(line["codes"]), len(line["ids"])) for line in lines] == [
        (1, 5_000, 5_000, 5_000), (2, 5_000, 5_000, 5_000), (3, 2_000, 2_000, 2_000)]
    with engine.connect() as connection:
        expired = dict(connection.execute(text("SELECT id, code FROM bookings WHERE status = 'expired'")).all())
    codes = [code for line in lines for code in line["codes"]]
    assert len(codes) == len(set(codes)) == len(expired) == 12_000
    assert set(codes) == set(expired.values())
    # And each line's ids go with its codes, in id order
    assert {i: c for line in lines for i, c in zip(line["ids"], line["codes"], strict=True)} == expired
    assert all(line["ids"] == sorted(line["ids"]) for line in lines)
    # And the seats per tour the lines give add up to what each tour got back, and to the sweep's total
    back: Counter = Counter()
    for line in lines:
        back.update({int(tour): seats for tour, seats in line["tours"].items()})
        assert line["seats"] == sum(line["tours"].values())
    assert dict(back) == per_tour
    [done] = audit_lines("sweep_done")
    assert (done["expired"], done["seats"], done["batches"]) == (12_000, sum(per_tour.values()), 3)


class HeldTransport:
    """An SMTP stand-in that holds each email until released, as a slow mail server does."""

    def __init__(self) -> None:
        self.sending, self.release = threading.Event(), threading.Event()

    def send(self, message, *, name: str = "") -> None:
        self.sending.set()
        assert self.release.wait(30)


def test_a_due_booking_whose_invoice_is_being_sent_at_that_moment_still_expires(tours):
    # Given a booking past its deadline, whose invoice the real mailer code is sending to a slow SMTP server
    # right now (a mail backlog, retries): the delivery row's foreign key holds KEY SHARE on the booking
    engine = tours.engine
    [tour] = tours.add(quota=10)
    add_bookings(engine, [tour], 1)
    with engine.connect() as connection:
        booking_id = connection.execute(text("SELECT id FROM bookings")).scalar_one()
    transport = HeldTransport()
    deliveries = Deliveries(engine=engine, transport=transport, sender=Sender("tickets@tripin.example", "Tripin"))
    sent: list[str] = []
    mailer = threading.Thread(target=lambda: sent.append(deliveries.deliver(booking_id, INVOICE, final_attempt=False)))
    mailer.start()
    try:
        assert transport.sending.wait(10)
        # When the sweep runs meanwhile
        result = sweep.sweep(engine)
    finally:
        transport.release.set()
        mailer.join(30)
    assert sent == ["sent"]
    # Then the booking is expired all the same: an email being sent is no reason to keep its seats
    assert (result.ran, result.expired) == (True, 1)
    assert bookings_by_status(engine) == {"expired": 1}


#: Trials of a settlement racing the sweep for a booking that has just passed its deadline.
RACE_TRIALS = 1_000
#: The sweep makes two more round trips (its advisory lock, a commit) than the settlement before it reaches
#: the booking, so started at the same instant the settlement wins about 4 times in 5. To even the race on
#: any machine, the settlement waits a handicap after the barrier that follows a staircase: a step longer
#: after each trial it won, a step shorter after each it lost. The handicap settles where each side wins
#: about half the time, a fraction of a millisecond, well inside either transaction: both stay in flight together.
HANDICAP_START_S, HANDICAP_STEP_S = 0.000_25, 0.000_025


def test_a_settlement_and_the_sweep_racing_on_a_just_expired_booking_end_paid_and_seats_add_up(tours):
    # Given 1,000 pending bookings, none due yet, on 10 tours with seats to spare
    tour_ids = tours.add(10, quota=300)
    add_bookings(tours.engine, tour_ids, RACE_TRIALS, due="none")
    with tours.engine.connect() as connection:
        bookings = connection.execute(text("SELECT id, code, tour_id, total_amount FROM bookings ORDER BY id")).all()
    # An engine of its own, without a pre-ping, so neither side pays an extra round trip the other does not
    engine = create_engine(DATABASE_URL, pool_size=4, max_overflow=0)
    orders = Counter()
    handicap = HANDICAP_START_S
    try:
        for booking in bookings:
            # When the booking's deadline has just passed, and its settlement and a sweep start at the same instant
            with engine.begin() as connection:
                connection.execute(text("UPDATE bookings SET expires_at = now() - interval '1 second' WHERE id = :id"),
                                   {"id": booking.id})
            barrier = threading.Barrier(2)
            outcome: dict[str, object] = {}

            def settle(booking=booking, barrier=barrier, outcome=outcome, delay=handicap):
                try:
                    barrier.wait()
                    time.sleep(delay)
                    outcome["payment"] = payments.apply(
                        engine, payments.settlement_for(booking.code, booking.total_amount))
                except Exception as exc:  # noqa: BLE001 - reported below
                    outcome["error"] = exc

            def expire(barrier=barrier, outcome=outcome):
                try:
                    barrier.wait()
                    outcome["sweep"] = sweep.sweep(engine)
                except Exception as exc:  # noqa: BLE001
                    outcome["error"] = exc

            threads = [threading.Thread(target=settle), threading.Thread(target=expire)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert "error" not in outcome, outcome
            payment, swept = outcome["payment"], outcome["sweep"]

            # Then it ends paid, one way or the other, and both sides agree which way it went
            assert payment.status == "paid" and payment.duplicate is False
            assert swept.ran
            if payment.outcome == "paid":
                assert swept.expired == 0, "the sweep expired a booking the settlement found pending"
            else:
                assert payment.outcome == "paid_after_expiry", payment
                assert swept.expired == 1
            orders[payment.outcome] += 1
            handicap = max(0.0, handicap + (HANDICAP_STEP_S if payment.outcome == "paid" else -HANDICAP_STEP_S))
            with engine.connect() as connection:
                status = connection.execute(text("SELECT status FROM bookings WHERE id = :id"),
                                            {"id": booking.id}).scalar_one()
            assert status == "paid"
            # And its tour's seats add up after every trial: never seats returned for a paid booking
            tours.assert_seats_add_up([booking.tour_id])
    finally:
        engine.dispose()
    print(f"\nsettlement and sweep racing, {RACE_TRIALS} trials: settlement first (paid) {orders['paid']}, "
          f"sweep first (paid_after_expiry) {orders['paid_after_expiry']}; settlement's handicap at the end "
          f"{handicap * 1e6:.0f} µs")
    assert orders["paid"] >= 1 and orders["paid_after_expiry"] >= 1, orders
    assert bookings_by_status(tours.engine) == {"paid": RACE_TRIALS}



def test_a_batch_stuck_on_a_locked_tour_gives_up_and_leaves_its_bookings_for_the_next_sweep(
    tours, logs, monkeypatch
):
    # Given due bookings on two tours, one of which someone holds in an open transaction for long
    engine = tours.engine
    tour_ids = tours.add(2, quota=1_000)
    add_bookings(engine, tour_ids, 200)
    monkeypatch.setattr(sweep, "LOCK_TIMEOUT", "300ms")
    with tour_row_locked(engine, tour_ids[1]):
        # When a sweep runs, its batch gives up on the lock instead of holding every booking it picked
        result = sweep.sweep(engine)
        assert (result.ran, result.interrupted, result.expired) == (True, True, 0)
        assert bookings_by_status(engine) == {"pending": 200}
        assert [r for r in logs.records if getattr(r, "event", None) == "batch_timed_out"]
        # and the sweep's advisory lock is free again
        assert advisory_locks(engine) == 0
    # Then the next sweep, the tour free, does the work
    assert sweep.sweep(engine).expired == 200
    assert bookings_by_status(engine) == {"expired": 200}


def test_a_sweep_that_fails_mid_run_does_not_leave_its_lock_behind(tours, monkeypatch):
    # Given a sweep whose batch raises (the time limit, a bug) after the advisory lock was taken
    engine = tours.engine
    [tour] = tours.add(quota=100)
    add_bookings(engine, [tour], 10)

    def fail(connection, limit):
        raise RuntimeError("interrupted in the middle of a batch")

    monkeypatch.setattr(sweep, "expire_due_bookings", fail)
    with pytest.raises(RuntimeError):
        sweep.sweep(engine)
    # Then no session holds the sweep's lock, pooled or not (the closed session's backend lets it go as it
    # exits, a moment after the client closed it), and the next sweep runs
    wait_until(lambda: advisory_locks(engine) == 0, timeout=10, what="the invalidated session's lock released")
    monkeypatch.undo()
    assert sweep.sweep(engine).expired == 10

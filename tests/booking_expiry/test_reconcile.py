"""Reconciliation through a real booking-expiry worker: what the gateway says of each order is applied once.

The gateway is the development one of the test process (tests.support.payment_gateway), told what it knows.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from antrian.bookings.gateway import StatusApi
from antrian.bookings.reconcile import reconcile
from antrian.messages import RECONCILE_PAYMENTS
from antrian.runtime.broker import make_broker
from tests.booking_expiry.helpers import add_bookings, log_events, metric, send_sweep
from tests.support import (
    PAYMENT_SERVER_KEY,
    outbox_drained,
    payment_gateway,
    postgresql_stopped,
    settings_for_tests,
    take_messages,
    wait_until,
)
from tests.sync_api.bookings.helpers import book, create_tour, notification, post_notification


def send_reconcile() -> None:
    """Enqueue one ``reconcile_payments()`` message, as the scheduler does."""
    broker = make_broker(settings_for_tests())
    try:
        RECONCILE_PAYMENTS.send(broker)
    finally:
        broker.close()


def booking(engine, code: str) -> dict:
    with engine.connect() as connection:
        row = connection.execute(text(
            "SELECT b.id, b.status, b.total_amount, t.quota, "
            "array(SELECT outcome FROM payments p WHERE p.booking_id = b.id ORDER BY p.id) AS outcomes "
            "FROM bookings b JOIN tours t ON t.id = b.tour_id WHERE b.code = :code"), {"code": code}).one()
    return dict(row._mapping)


def e_tickets(engine) -> list[list]:
    with engine.connect() as connection:
        bodies = connection.execute(text("SELECT body FROM outbox ORDER BY id")).scalars().all()
    messages = [json.loads(bytes(body)) for body in bodies]
    return [message["args"] for message in messages if message["actor_name"] == "send_eticket_email"]


def settled_at_gateway(engine, code: str) -> None:
    amount = f"{booking(engine, code)['total_amount']:.2f}"
    payment_gateway().record(code, {"transaction_status": "settlement", "fraud_status": "accept",
                                    "transaction_id": f"tx-{code}", "gross_amount": amount, "status_code": "200"})


def test_reconciliation_applies_what_the_gateway_confirms_once(clean, tours, start_expiry_worker):
    # Given bookings whose notifications never came
    [tour, full] = tours.add(2, quota=10), tours.add(1, quota=0)
    tour, full = tour[0], full[0]
    paid = add_bookings(clean, [tour], 1) + "-0000000"  # pending for 2 hours, paid at the gateway
    unknown = add_bookings(clean, [tour], 1) + "-0000000"  # pending, the gateway knows nothing of it
    fresh = add_bookings(clean, [tour], 1) + "-0000000"  # pending for seconds only: its notification may come
    with clean.begin() as connection:
        connection.execute(text("UPDATE bookings SET created_at = now() WHERE code = :code"), {"code": fresh})
    late = add_bookings(clean, [tour], 1, status="expired") + "-0000000"  # expired, paid, its seats still free
    gone = add_bookings(clean, [full], 1, status="expired") + "-0000000"  # expired, paid, its seats sold
    for code in (paid, fresh, late, gone):
        settled_at_gateway(clean, code)
    before = payment_gateway().requests.get(fresh, 0)

    # When a booking-expiry worker reconciles, twice
    worker = start_expiry_worker()
    for runs in (1, 2):
        send_reconcile()
        wait_until(lambda runs=runs: len(log_events(worker.log(), event="payments_reconciled")) == runs,
                   timeout=60, what=f"reconciliation run {runs}")

    # Then the paid order is paid, with one e-ticket; the late one too, its seats taken again
    assert booking(clean, paid)["status"] == "paid" and booking(clean, paid)["outcomes"] == ["paid"]
    assert booking(clean, late)["status"] == "paid" and booking(clean, late)["outcomes"] == ["paid_after_expiry"]
    assert sorted(e_tickets(clean)) == sorted([[booking(clean, paid)["id"]], [booking(clean, late)["id"]]])
    # The one whose seats were sold stays expired, its money recorded as owed back
    assert booking(clean, gone)["status"] == "expired" and booking(clean, gone)["outcomes"] == ["refund_due"]
    # The unknown one and the fresh one are untouched, and the fresh one was not even asked about
    assert booking(clean, unknown)["status"] == booking(clean, fresh)["status"] == "pending"
    assert payment_gateway().requests.get(fresh, 0) == before
    # The second run changed nothing (its answers were repeats), and the worker counted what it did
    [first, second] = log_events(worker.log(), event="payments_reconciled")
    assert first["outcomes"] == {"paid": 1, "paid_after_expiry": 1, "refund_due": 1} and first["unknown"] == 1
    # (the bookings now paid are no longer asked about: the unknown one and the one owed back are)
    assert (second["asked"], second["outcomes"], second["unknown"]) == (2, {"duplicate": 1}, 1)
    assert first["asked"] == 4
    assert metric(worker.metrics_url, "antrian_payments_reconciled_total", outcome="paid") == 1
    assert metric(worker.metrics_url, "antrian_payment_reconcile_last_success_timestamp_seconds") > 0


def test_a_gateway_that_answers_nothing_fails_the_run_and_changes_nothing(clean, tours, start_expiry_worker):
    [tour] = tours.add(1, quota=10)
    code = add_bookings(clean, [tour], 1) + "-0000000"
    settled_at_gateway(clean, code)
    payment_gateway().fail(status=503)
    try:
        worker = start_expiry_worker()
        send_reconcile()
        wait_until(lambda: "the payment gateway answered none" in worker.log(), timeout=60, what="the failed run")
    finally:
        payment_gateway().heal()
    assert booking(clean, code)["status"] == "pending"
    assert log_events(worker.log(), event="payments_reconciled") == []
    assert metric(worker.metrics_url, "antrian_payment_reconcile_last_success_timestamp_seconds") == 0
    assert metric(worker.metrics_url, "antrian_payment_reconcile_failures_total") == 1


@pytest.mark.restarts
def test_a_payment_whose_notification_was_lost_while_postgresql_was_down_is_settled_by_reconciliation(
    clean, tours, start_web, auth, start_expiry_worker
):
    # Given a booking, and a worker that reconciles and sweeps
    web = start_web()
    tour = create_tour(web, auth, quota=10)
    tours.track(tour["id"], 10)
    made = book(web, auth, tour["id"], quantity=2).json()
    worker = start_expiry_worker()

    # When the customer pays while PostgreSQL is down: the gateway's notification cannot be handled
    settled_at_gateway(clean, made["code"])
    with postgresql_stopped():
        lost = post_notification(web, notification(made["code"], "settlement", made["total_amount"]))
        assert lost.status_code == 503
    # (and the gateway gives up retrying: no notification ever comes again)

    # Then, a minute on, reconciliation finds the payment: the booking is paid and gets one e-ticket
    with clean.begin() as connection:
        connection.execute(text("UPDATE bookings SET created_at = now() - interval '2 minutes' WHERE id = :id"),
                           {"id": made["id"]})
    send_reconcile()
    wait_until(lambda: log_events(worker.log(), event="payments_reconciled"), timeout=60, what="reconciliation")
    state = booking(clean, made["code"])
    assert state["status"] == "paid" and state["outcomes"] == ["paid"] and state["quota"] == 8
    outbox_drained(clean)
    assert [message["actor_name"] for message in take_messages("emails")].count("send_eticket_email") == 1

    # And once its deadline passes, the sweep leaves it alone: a paid booking never expires
    with clean.begin() as connection:
        connection.execute(text("UPDATE bookings SET expires_at = now() - interval '1 minute' WHERE id = :id"),
                           {"id": made["id"]})
    send_sweep()
    wait_until(lambda: log_events(worker.log(), event="sweep_done"), timeout=60, what="the sweep")
    assert booking(clean, made["code"])["status"] == "paid" and booking(clean, made["code"])["quota"] == 8


def test_two_reconciliations_at_once_apply_each_answer_once(clean, tours):
    # Given 40 pending bookings paid at the gateway (a CronJob and a scheduler may both reconcile at once)
    [tour] = tours.add(1, quota=1_000)
    prefix = add_bookings(clean, [tour], 40)
    codes = [f"{prefix}-{n:07d}" for n in range(40)]
    for code in codes:
        settled_at_gateway(clean, code)
    status_api = StatusApi(base_url=payment_gateway().url, server_key=PAYMENT_SERVER_KEY)

    # When two reconciliations run at the same time, in threads of their own
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(lambda _: reconcile(clean, status_api, concurrency=4), range(2)))

    # Then every booking is paid once, with one payment row and one e-ticket, whichever run got to it first
    assert sum(run.outcomes["paid"] for run in runs) == 40
    with clean.connect() as connection:
        rows = connection.execute(text(
            "SELECT b.status, count(p.id) FROM bookings b LEFT JOIN payments p ON p.booking_id = b.id "
            "WHERE b.code LIKE :prefix GROUP BY b.id, b.status"), {"prefix": f"{prefix}-%"}).all()
    assert sorted(rows) == [("paid", 1)] * 40
    assert len(e_tickets(clean)) == 40


def test_an_answer_that_cannot_be_applied_is_left_for_later_and_the_run_goes_on(clean, tours):
    # Given two pending bookings paid at the gateway, whose answer for the first has an amount that is not a number
    [tour] = tours.add(1, quota=100)
    prefix = add_bookings(clean, [tour], 2)
    broken, fine = f"{prefix}-0000000", f"{prefix}-0000001"
    settled_at_gateway(clean, fine)
    payment_gateway().record(broken, {"transaction_status": "settlement", "transaction_id": "tx",
                                      "gross_amount": "lots", "status_code": "200"})
    # When they are reconciled
    done = reconcile(clean, StatusApi(base_url=payment_gateway().url, server_key=PAYMENT_SERVER_KEY))
    # Then the broken one is left for the next run, and the other is paid
    assert (done.asked, done.deferred, done.outcomes["paid"]) == (2, 1, 1)
    assert booking(clean, broken)["status"] == "pending" and booking(clean, fine)["status"] == "paid"


def test_a_run_out_of_time_stops_taking_batches_having_asked_the_pending_and_the_newest_expired_first(clean, tours):
    # Given two pending bookings and 30 expired ones (each a millisecond newer than the last), all paid at the gateway
    [tour] = tours.add(1, quota=100)
    pending = [f"{add_bookings(clean, [tour], 1)}-0000000" for _ in range(2)]
    prefix = add_bookings(clean, [tour], 30, status="expired", age_minutes=5)
    expired_newest_first = [f"{prefix}-{n:07d}" for n in reversed(range(30))]
    for code in pending + expired_newest_first:
        settled_at_gateway(clean, code)
    # When a run in batches of 10 spends its budget during its second batch
    status_api = StatusApi(base_url=payment_gateway().url, server_key=PAYMENT_SERVER_KEY)
    asked, ask = [], status_api.status

    def slow_status(code):
        asked.append(code)
        if len(asked) == 12:
            time.sleep(0.6)
        return ask(code)

    status_api.status = slow_status
    done = reconcile(clean, status_api, batch_size=10, concurrency=1, budget_s=0.5)
    # Then it asked the pending ones, then the newest expired, and left the 20 oldest for the next run
    assert sorted(asked[:2]) == sorted(pending) and asked[2:12] == expired_newest_first[:10]
    assert (done.asked, done.not_reached) == (12, 20)
    newest, oldest = booking(clean, expired_newest_first[0]), booking(clean, expired_newest_first[-1])
    assert newest["outcomes"] and not oldest["outcomes"]

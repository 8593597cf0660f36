"""A job that runs out of attempts, on any queue, is stored once in failed_jobs with its exception, and not
left in RabbitMQ's dead-letter queue; when the store is unavailable, the dead letter is imported later."""

from __future__ import annotations

import signal
import time

import requests

from antrian.messages import EMAILS_QUEUE
from tests.booking_expiry.helpers import send_sweep
from tests.jobs.helpers import (
    add_due_booking,
    add_students,
    dead_letters,
    failed_rows,
    refusing,
    run_state,
    start_run,
    wait_for_failed,
)
from tests.proxy import FreezableProxy
from tests.support import BROKER_URL, log_events, metric, queue_depth, settled, wait_until
from tests.sync_api.bookings.helpers import book, create_tour

SPEC_QUEUES = ("sync-pembayaran", "emails", "booking-expiry")


def test_failures_on_every_queue_are_stored_once_with_their_exception(
    clean, school_api, smtp_server, workers, start_web, auth
):
    web = start_web()
    started = workers()

    # sync-pembayaran: one student's school API answers 503 to all three attempts, another is refused for good
    add_students(clean, [101, 102, 103])
    school_api.down.add(101)
    school_api.refused.add(102)
    run_id = start_run(web, auth)
    # emails: the SMTP server refuses the invoice for good
    smtp_server.replies = ["550 5.1.1 <budi@example.com>: mailbox unavailable"]
    tour = create_tour(web, auth, quota=10)
    booking = book(web, auth, tour["id"], quantity=1).json()
    wait_for_failed(clean, 3, timeout=60)
    # booking-expiry: PostgreSQL refuses the sweep's update of the due booking
    due = add_due_booking(clean)
    with refusing(clean, "bookings"):
        send_sweep()
        wait_for_failed(clean, 1, queue_name="booking-expiry")

    settled()  # nothing in flight: no second copy of anything can still turn up
    rows = {(row["queue_name"], row["actor_name"], tuple(row["args"])): row for row in failed_rows(clean)}
    assert len(failed_rows(clean)) == 4 and len({row["message_id"] for row in rows.values()}) == 4
    transient = rows[("sync-pembayaran", "sync_student_payment", (101, run_id))]
    assert transient["attempts"] == 3 and "503" in transient["exception"]
    permanent = rows[("sync-pembayaran", "sync_student_payment", (102, run_id))]
    assert permanent["attempts"] == 1 and permanent["exception"].startswith("StudentSyncFailed:")
    assert "siswa tidak ditemukan" in permanent["exception"]
    email = rows[("emails", "send_invoice_email", (booking["id"],))]
    assert email["attempts"] == 1 and "550" in email["exception"]
    sweep = rows[("booking-expiry", "expire_unpaid_bookings", ())]
    assert sweep["attempts"] == 1 and "refused by the test: UPDATE on bookings" in sweep["exception"]
    for row in rows.values():
        assert row["traceback"].startswith("Traceback (most recent call last)"), row
        assert row["worker"] and row["enqueued_at"] <= row["failed_at"]

    # Nothing stays in RabbitMQ: not on the queues, not dead-lettered
    assert dead_letters(*SPEC_QUEUES) == 0
    assert all(queue_depth(queue) == 0 for queue in SPEC_QUEUES)
    # The run counted both failures, the sweep changed nothing
    run = run_state(web, auth, run_id)
    assert (run["processed"], run["failed"], run["isRunning"]) == (3, 2, False)
    with clean.connect() as connection:
        assert connection.exec_driver_sql(f"SELECT status FROM bookings WHERE id = {due}").scalar_one() == "pending"
    # Each worker counted what it stored, and logged it as one structured line
    for name, queue, count in (("sync-worker", "sync-pembayaran", 2), ("mailer", "emails", 1),
                               ("booking-expiry", "booking-expiry", 1)):
        assert metric(started[name].metrics_url, "antrian_jobs_failed_total", queue=queue) == count
        assert len(log_events(started[name].log(), event="job_failed")) == count


def test_a_worker_killed_after_storing_a_failure_but_before_its_ack_keeps_it_once(
    clean, smtp_server, start_dramatiq, start_web, auth, request
):
    web = start_web()
    # The first mailer reaches RabbitMQ through a proxy that holds back everything it sends from the
    # moment the SMTP server is asked: the failure is stored, its ack never arrives, and it is killed.
    proxy = FreezableProxy(5672)
    request.addfinalizer(proxy.close)
    first = start_dramatiq("mailer", threads=1, BROKER_URL=BROKER_URL.replace(":5672/", f":{proxy.port}/"),
                           **smtp_server.env())
    smtp_server.replies = ["550 5.7.1 refused"] * 2
    smtp_server.on_data = proxy.freeze
    tour = create_tour(web, auth, quota=10)
    book(web, auth, tour["id"], quantity=1)
    [stored] = wait_for_failed(clean, 1, queue_name=EMAILS_QUEUE)
    time.sleep(0.5)  # the worker has acked by now, into the frozen proxy
    first.process.send_signal(signal.SIGKILL)
    first.kill()
    proxy.cut()
    wait_until(lambda: queue_depth(EMAILS_QUEUE) == 1, timeout=30, what="RabbitMQ to requeue the unacked message")

    # The redelivered message is acknowledged without running: its failure is stored, the row is the one copy
    second = start_dramatiq("mailer", threads=1, **smtp_server.env())
    wait_until(lambda: queue_depth(EMAILS_QUEUE) == 0 and log_events(second.log(), event="failed_job_redelivered"),
               timeout=30, what="the redelivery acknowledged")
    settled()
    assert smtp_server.attempts == 1 and failed_rows(clean) == [stored]
    assert dead_letters(EMAILS_QUEUE) == 0
    # And the row is still there to retry: the email goes once the server takes it
    smtp_server.replies = []
    assert requests.post(f"{web}/api/jobs/failed/{stored['id']}/retry", headers=auth).status_code == 202
    wait_until(lambda: len(smtp_server.messages) == 1 and not failed_rows(clean), timeout=30, what="the retry")


def test_a_failure_the_store_cannot_take_waits_in_the_dead_letter_queue_and_is_imported_later(
    clean, workers
):
    started = workers("booking-expiry")
    add_due_booking(clean)
    # The sweep fails, and so does storing its failure: the message is dead-lettered by RabbitMQ as before
    with refusing(clean, "bookings"), refusing_failed_jobs(clean):
        send_sweep()
        wait_until(lambda: dead_letters("booking-expiry") == 1, timeout=30, what="the message in booking-expiry.XQ")
        assert failed_rows(clean) == []
        # The line goes through Dramatiq's log pipe, RabbitMQ's dead-lettering does not wait for it
        [line] = wait_until(lambda: log_events(started["booking-expiry"].log(), event="failed_job_not_stored"),
                            timeout=10, what="the line saying the failed job was not stored")
        assert "booking-expiry.XQ" in line["message"]
    # Once failed_jobs takes writes again, the worker's importer moves it there, and out of RabbitMQ
    [row] = wait_for_failed(clean, 1, timeout=40, queue_name="booking-expiry")
    assert row["actor_name"] == "expire_unpaid_bookings" and "dead-lettered" in row["exception"]
    wait_until(lambda: dead_letters("booking-expiry") == 0, timeout=10, what="the dead letter acknowledged")
    # logged after the ack, through Dramatiq's log pipe
    wait_until(lambda: log_events(started["booking-expiry"].log(), event="dead_letter_imported"), timeout=10,
               what="the import logged")
    settled()
    assert len(log_events(started["booking-expiry"].log(), event="dead_letter_imported")) == 1


def refusing_failed_jobs(engine):
    return refusing(engine, "failed_jobs", "INSERT OR UPDATE")

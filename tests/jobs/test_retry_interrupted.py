"""RabbitMQ stopped in the middle of a retry-all: every failed job is still stored or back on its queue, none
lost; the few of the unconfirmed batch that are both run once, and their rows go when they run."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from sqlalchemy import text

from antrian.jobs import failed_jobs
from antrian.jobs.keep_failed import describe
from antrian.messages import EMAILS_QUEUE, SEND_INVOICE_EMAIL
from tests.jobs.helpers import failed_rows
from tests.support import BIN, ROOT, base_env, queue_depth, rabbitmq_stopped, wait_until

JOBS = 2_000
BATCH = 50


def failed_invoices(engine, count: int) -> list[int]:
    """``count`` pending bookings whose invoice job failed for good (stored as the worker stores it)."""
    with engine.begin() as connection:
        tour = connection.execute(text(
            "INSERT INTO tours (name, quota, price, starts_at) VALUES ('Komodo', 0, 900000, now() + interval '60 days')"
            " RETURNING id")).scalar_one()
        ids = connection.execute(text(
            "INSERT INTO bookings (code, tour_id, customer_name, customer_email, quantity, total_amount, expires_at) "
            "SELECT 'RTRY-' || lpad(g::text, 4, '0'), :tour, 'Customer ' || g, 'c' || g || '@example.com', 1, "
            "900000, now() + interval '1 hour' FROM generate_series(1, :n) g RETURNING id"),
            {"tour": tour, "n": count}).scalars().all()
        failure = describe(ConnectionRefusedError("SMTP server down"), attempts=3)
        for booking_id in ids:
            failed_jobs.keep(connection, SEND_INVOICE_EMAIL.message(booking_id), failure)
    return ids


def stored(engine) -> int:
    with engine.connect() as connection:
        return connection.exec_driver_sql("SELECT count(*) FROM failed_jobs").scalar_one()


@pytest.mark.restarts
def test_rabbitmq_stopped_during_a_retry_all_loses_nothing_and_doubles_nothing(
    clean, smtp_server, start_dramatiq
):
    bookings = failed_invoices(clean, JOBS)
    retry_all = subprocess.Popen(
        [str(BIN / "antrian"), "jobs", "retry", "--all", "--batch-size", str(BATCH)],
        env=base_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # A few batches in, the retry is frozen where it stands and RabbitMQ stops under it
    wait_until(lambda: stored(clean) <= JOBS - 4 * BATCH, timeout=60, interval=0.002, what="a few batches retried")
    os.kill(retry_all.pid, signal.SIGSTOP)
    with rabbitmq_stopped():
        os.kill(retry_all.pid, signal.SIGCONT)
        _, stderr = retry_all.communicate(timeout=90)
    assert retry_all.returncode == 3, stderr
    [line] = stderr.strip().splitlines()
    assert line.startswith("antrian jobs retry: RabbitMQ stopped confirming after ") and "retry them again" in line

    # RabbitMQ is back: every job is stored or queued; only the unconfirmed batch may be both
    left, queued = stored(clean), queue_depth(EMAILS_QUEUE)
    assert 0 < left < JOBS and queued > 0, (left, queued)
    assert JOBS <= left + queued <= JOBS + BATCH, (left, queued)

    # The rest retried, the mailer runs everything: each invoice sent once, no row and no message left
    result = subprocess.run([str(BIN / "antrian"), "jobs", "retry", "--all"], env=base_env(), cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == f"retried {left} failed jobs", result
    start_dramatiq("mailer", processes=2, threads=4, **smtp_server.env())
    wait_until(lambda: len(smtp_server.messages) >= JOBS and queue_depth(EMAILS_QUEUE) == 0, timeout=120,
               interval=0.5, what=f"{JOBS} invoices")
    wait_until(lambda: failed_rows(clean) == [], timeout=10, what="no failed job left")
    assert len(smtp_server.messages) == JOBS
    assert {str(m["Message-ID"]) for m in smtp_server.messages} == {
        f"<invoice.RTRY-{n:04d}@example.com>" for n in range(1, JOBS + 1)
    }
    with clean.connect() as connection:
        sent = connection.exec_driver_sql("SELECT count(*) FROM email_deliveries WHERE status = 'sent'").scalar_one()
    assert sent == len(bookings)

"""Pausing a queue: every worker process stops taking its messages within seconds, keeps them queued through a
restart, and takes each exactly once after resume; from the API, the terminal and the admin page.

Real processes throughout: sync-api under gunicorn, two mailer commands (as on two hosts), RabbitMQ, PostgreSQL,
an aiosmtpd server and headless Chromium.
"""

from __future__ import annotations

import getpass
import subprocess
import threading
import time
from collections import Counter
from dataclasses import replace

import requests
from playwright.sync_api import Page, expect
from sqlalchemy import text

from antrian.access.audit import command_actor
from antrian.config import load_settings
from antrian.jobs import pauses
from antrian.runtime.pauses import POLL_INTERVAL_S, HonourPauses
from tests.jobs.test_admin_jobs_page import LIVE_MS, queue_cell, sign_in
from tests.support import BIN, ROOT, base_env, free_port, metric, outbox_drained, settled, wait_until
from tests.sync_api.bookings.helpers import book, create_tour

#: Seconds a pause may take to hold everywhere: a poll, and the email each mailer thread may be sending.
TAKES_HOLD_S = POLL_INTERVAL_S + 3


def antrian(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "antrian"), *args], env=base_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def emails_queue(web: str, auth: dict) -> dict:
    items = requests.get(f"{web}/api/queues", headers=auth, timeout=10).json()["items"]
    return next(item for item in items if item["name"] == "emails")


def sending(mailer) -> float:
    """Invoices a mailer is processing now (Dramatiq's in-progress gauge)."""
    return metric(mailer.metrics_url, "dramatiq_messages_inprogress", queue_name="emails",
                  actor_name="send_invoice_email")


def invoices_sent(smtp_server) -> Counter:
    """How many times each booking's invoice reached the SMTP server (by the booking code in its subject)."""
    return Counter(subject.split()[1] for subject in smtp_server.subjects())  # "Invoice CODE — tour"


def test_a_paused_queue_sends_nothing_on_any_mailer_keeps_its_messages_through_a_restart_and_each_once_after(
    clean, start_web, start_dramatiq, smtp_server, auth
):
    # Given sync-api, two mailer commands (two hosts' worth) of 2 threads, and an SMTP server that holds every
    # email until the gate opens: each mailer has 2 invoices being sent and 2 more prefetched when the pause comes
    gate = threading.Event()
    smtp_server.on_data = lambda: gate.wait(20)
    web = start_web()
    mailers = [start_dramatiq("mailer", threads=2, **smtp_server.env()) for _ in range(2)]
    tour = create_tour(web, auth, quota=500)
    codes = [book(web, auth, tour["id"], quantity=1).json()["code"] for _ in range(30)]
    wait_until(lambda: sum(sending(mailer) for mailer in mailers) == 4, timeout=30, what="every mailer thread sending")

    # When the emails queue is paused from the API, and the emails being sent then go through
    answer = requests.post(f"{web}/api/queues/emails/pause", headers=auth, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["paused"] is True and answer.json()["paused_by"] == "API_TOKEN"
    time.sleep(POLL_INTERVAL_S + 1)
    gate.set()

    # Then those 4 are sent and nothing more: the prefetched invoices were given back to RabbitMQ unsent; no
    # mailer takes any other, although bookings keep arriving; their invoices wait in the queue
    wait_until(lambda: len(smtp_server.messages) == 4, timeout=30, what="the 4 emails being sent at the pause")
    codes += [book(web, auth, tour["id"], quantity=1).json()["code"] for _ in range(10)]
    outbox_drained(clean)
    time.sleep(TAKES_HOLD_S)
    assert len(smtp_server.messages) == 4
    wait_until(lambda: emails_queue(web, auth)["ready"] == len(codes) - 4, timeout=15,
               what="every unsent invoice ready in the queue")
    # No consumer: none holds a message unacknowledged. Read from the management API, which samples a queue's
    # figures every 5 s (collect_statistics_interval), the consumer count can trail the ready count by a sample
    queue = wait_until(lambda: (q := emails_queue(web, auth))["consumers"] == 0 and q, timeout=15,
                       what="no consumer on the paused emails queue")
    assert queue["paused"] is True, queue

    # And the pause outlives a mailer's restart
    mailers[0].stop()
    mailers[0].start(timeout=60)
    time.sleep(TAKES_HOLD_S)
    assert len(smtp_server.messages) == 4

    # When it is resumed, every invoice is sent, each exactly once
    answer = requests.post(f"{web}/api/queues/emails/resume", headers=auth, timeout=10)
    assert answer.status_code == 200 and answer.json() == {"name": "emails", "paused": False, "paused_at": None,
                                                           "paused_by": None}
    wait_until(lambda: len(smtp_server.messages) >= len(codes), timeout=60, what="every invoice after resume")
    time.sleep(2)  # anything sent twice would arrive now
    sent = invoices_sent(smtp_server)
    assert set(sent) == set(codes) and set(sent.values()) == {1}, sent.most_common(3)
    settled()  # the last emails are recorded sent after the SMTP server's reply
    with clean.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM email_deliveries WHERE status = 'sent'")).scalar_one() \
            == len(codes)


def test_pause_and_resume_from_the_terminal_shown_in_antrian_queues_and_the_metrics(clean, start_web, auth):
    web = start_web()
    metrics = web.metrics

    paused = antrian("queues", "pause", "emails")
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.startswith("emails paused since ") and f"(by cli:{getpass.getuser()})" in paused.stdout
    table = antrian("queues").stdout.splitlines()
    assert table[0].split()[-1] == "STATE"
    states = {line.split()[0]: line.split()[-1] for line in table[1:] if line and not line.startswith("(")}
    assert states == {"booking-expiry": "running", "emails": "paused", "sync-pembayaran": "running"}
    assert metric(metrics, "antrian_queue_paused", queue="emails") == 1
    assert metric(metrics, "antrian_queue_paused", queue="sync-pembayaran") == 0
    assert emails_queue(web, auth)["paused_by"] == f"cli:{getpass.getuser()}"

    again = antrian("queues", "pause", "emails")  # pausing again keeps the first pause
    assert again.returncode == 0 and again.stdout.split("(from")[0] == paused.stdout.split("(from")[0]

    assert antrian("queues", "resume", "emails").stdout == "emails resumed\n"
    assert antrian("queues", "resume", "emails").stdout == "emails was not paused\n"
    assert metric(metrics, "antrian_queue_paused", queue="emails") == 0

    unknown = antrian("queues", "pause", "email")
    assert unknown.returncode == 2 and "Invalid value for 'QUEUE'" in unknown.stderr


def test_pausing_needs_the_token_and_a_queue_antrian_has(clean, start_web, auth):
    web = start_web()
    assert requests.post(f"{web}/api/queues/emails/pause", timeout=10).status_code == 401
    unknown = requests.post(f"{web}/api/queues/nope/pause", headers=auth, timeout=10)
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "queue 'nope' not found: one of sync-pembayaran, emails, booking-expiry"
    assert requests.post(f"{web}/api/queues/emails.DQ/resume", headers=auth, timeout=10).status_code == 404
    with clean.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM paused_queues")).scalar_one() == 0


def test_a_queue_is_paused_and_resumed_from_the_admin_page(clean, start_web, auth, page: Page):
    web = start_web()
    sign_in(page, web)
    state = queue_cell(page, "emails", "state")
    expect(state).to_have_text("running", timeout=LIVE_MS)
    button = page.locator('#queue-rows button[data-pause="emails"]')
    expect(button).to_have_text("Pause")

    button.click()
    expect(page.locator("#message")).to_have_text("Queue emails paused: no worker takes its messages.")
    expect(state).to_have_text("paused")
    expect(button).to_have_text("Resume")
    assert emails_queue(web, auth)["paused_by"] == "API_TOKEN"
    expect(queue_cell(page, "sync-pembayaran", "state")).to_have_text("running")

    button.click()
    expect(page.locator("#message")).to_have_text("Queue emails resumed.")
    expect(state).to_have_text("running")
    assert emails_queue(web, auth)["paused"] is False


def test_a_worker_takes_nothing_before_its_first_read_and_keeps_the_last_set_while_postgresql_is_away(clean):
    settings = load_settings(base_env())
    honour = HonourPauses(settings)
    assert honour.is_paused("emails") and honour.is_paused("sync-pembayaran"), "nothing before the first read"
    pauses.pause(clean, "emails", by=command_actor())
    assert honour.refresh() is True
    assert honour.is_paused("emails") and not honour.is_paused("sync-pembayaran")
    assert honour.is_paused("emails.DQ"), "a delay queue's messages belong to their queue"

    # PostgreSQL away: the last set read stands (a pause is not lifted by an outage)
    honour.engine().dispose()
    honour._engine = None
    honour.settings = replace(settings, database_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x")
    assert honour.refresh() is False
    assert honour.is_paused("emails") and not honour.is_paused("sync-pembayaran")

"""The admin jobs page in a real headless Chromium, against a real sync-api, mailer and SMTP server:
queues and failed jobs shown live, a failed email retried from the page and sent once, jobs flushed."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect
from sqlalchemy import text

from antrian.messages import EMAILS_QUEUE, EXPIRE_UNPAID_BOOKINGS, SEND_ETICKET_EMAIL, SEND_INVOICE_EMAIL
from tests.jobs.helpers import failed_rows, store, wait_for_failed
from tests.support import API_TOKEN, wait_until
from tests.sync_api.bookings.helpers import book, create_tour

#: Milliseconds the page may take to show what changed: it polls every 2 s.
LIVE_MS = 10_000
#: Milliseconds for a job a worker fails to be stored and shown (the outbox relay, the mailer, the poll).
WORKER_MS = 30_000
HOSTILE = "<img src=x onerror=alert(1)>"


def sign_in(page: Page, web: str) -> None:
    """Open the jobs page without a session, get sent to the login form, sign in and land on the page."""
    page.goto(f"{web}/admin/jobs")
    expect(page).to_have_url(re.compile(r"/admin/login\?next=(/|%2F)admin(/|%2F)jobs$"))
    expect(page.locator("input[name=next]")).to_have_value("/admin/jobs")
    page.fill("#token", API_TOKEN)
    page.click("#login")
    expect(page).to_have_url(f"{web}/admin/jobs")
    expect(page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()


def job_rows(page: Page):
    return page.locator("#failed-rows tr")


def queue_cell(page: Page, queue: str, field: str):
    return page.locator(f'#queue-rows tr[data-queue="{queue}"] [data-field="{field}"]')


def audit(engine) -> list[tuple]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(
            "SELECT action, queue_name, jobs, source FROM failed_job_actions ORDER BY id"))]


def wait_for_refresh(page: Page) -> None:
    """Let the page finish at least one whole refresh of the failed jobs: the polls are chained, so the
    second request starts only after the first answer was handled."""
    for _ in range(2):
        with page.expect_response(lambda r: "/api/jobs/failed?" in r.url, timeout=LIVE_MS):
            pass


def test_a_failed_invoice_email_shows_up_live_and_is_retried_from_the_page_and_sent_once(
    clean, smtp_server, workers, start_web, auth, page: Page, tmp_path
):
    # Given the sync-api, a real mailer, and an SMTP server that refuses the next email for good
    web = start_web()
    workers("mailer")
    smtp_server.replies = ["550 5.1.1 mailbox unavailable"]

    # When the admin opens the jobs page, is sent to sign in, and signs in with the token
    sign_in(page, web)

    # Then the page shows every queue of SPEC, no failed jobs, and links to the sync page
    expect(page.locator("#queue-rows tr")).to_have_count(3, timeout=LIVE_MS)
    assert page.locator("#queue-rows tr").evaluate_all("rows => rows.map(r => r.dataset.queue)") == [
        "booking-expiry", "emails", "sync-pembayaran",
    ]
    expect(queue_cell(page, EMAILS_QUEUE, "dead_lettered")).to_have_text("0")
    expect(page.get_by_text("No failed jobs.")).to_be_visible()
    expect(page.get_by_role("link", name="Sync pembayaran")).to_have_attribute("href", "/admin/sync-pembayaran")
    # And the mailer shows up as the emails queue's consumer (the management API refreshes every few seconds)
    expect(queue_cell(page, EMAILS_QUEUE, "consumers")).to_have_text("1", timeout=WORKER_MS)
    page.evaluate("window.__notReloaded = true")

    # When a customer books, and the mailer's invoice is refused with a 550
    tour = create_tour(web, auth, quota=10)
    booking = book(web, auth, tour["id"], quantity=1).json()
    [stored] = wait_for_failed(clean, 1, queue_name=EMAILS_QUEUE)

    # Then the page shows the failed job without a reload, with why it failed
    row = page.locator(f'#failed-rows tr[data-job="{stored["id"]}"]')
    expect(row).to_be_visible(timeout=WORKER_MS)
    expect(job_rows(page)).to_have_count(1)
    assert page.evaluate("window.__notReloaded") is True
    expect(row.locator('[data-field="queue"]')).to_have_text(EMAILS_QUEUE)
    expect(row.locator('[data-field="job"]')).to_have_text(f"{SEND_INVOICE_EMAIL.actor}({booking['id']})")
    expect(row.locator('[data-field="attempts"]')).to_have_text(str(stored["attempts"]))
    expect(row.locator('[data-field="exception"] summary')).to_contain_text("550")
    expect(page.get_by_text("No failed jobs.")).to_be_hidden()
    # And the emails queue counts it as failed
    expect(queue_cell(page, EMAILS_QUEUE, "dead_lettered")).to_have_text("1", timeout=LIVE_MS)

    # When the admin opens its traceback
    row.locator("summary").click()

    # Then it is shown, and stays open while the page keeps refreshing
    expect(row.locator("pre")).to_be_visible()
    assert row.locator("pre").text_content() == stored["traceback"] and "Traceback" in stored["traceback"]
    wait_for_refresh(page)
    expect(row.locator("details")).to_have_attribute("open", "")
    # And a screenshot of the page with the failed job is kept with the test's files
    screenshot = tmp_path / "admin-jobs.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000

    # When the SMTP server accepts again and the admin clicks the row's Retry
    smtp_server.replies = []
    with page.expect_response(lambda r: r.url.endswith(f"/api/jobs/failed/{stored['id']}/retry")) as retried:
        row.get_by_role("button", name="Retry").click()

    # Then the API took it from the page's script, and the page says so and drops the row at once
    assert retried.value.status == 202
    assert retried.value.request.headers.get("x-requested-with") == "fetch"
    expect(page.get_by_role("status")).to_have_text(f"Job {stored['id']} retried.")
    expect(job_rows(page)).to_have_count(0)
    expect(page.get_by_text("No failed jobs.")).to_be_visible()
    expect(queue_cell(page, EMAILS_QUEUE, "dead_lettered")).to_have_text("0", timeout=LIVE_MS)

    # And the invoice is sent, once: its delivery is committed as sent before the mailer acks the message
    wait_until(lambda: _delivery_status(clean, booking["id"]) == "sent", timeout=30, what="the invoice sent")
    assert len(smtp_server.messages) == 1 and smtp_server.attempts == 2
    assert booking["code"] in smtp_server.subjects()[0]
    assert failed_rows(clean) == []
    assert audit(clean) == [("retry", EMAILS_QUEUE, 1, "admin")]
    assert page.evaluate("window.__notReloaded") is True


def _delivery_status(engine, booking_id: int) -> str | None:
    with engine.connect() as connection:
        return connection.execute(text(
            "SELECT status FROM email_deliveries WHERE booking_id = :id AND kind = 'invoice'"), {"id": booking_id}
        ).scalar_one_or_none()


def test_failed_jobs_are_flushed_after_confirming_and_retried_by_queue(clean, start_web, page: Page):
    # Given two failed emails and a failed sweep
    emails = [store(clean, SEND_ETICKET_EMAIL, 7), store(clean, SEND_ETICKET_EMAIL, 8)]
    sweep = store(clean, EXPIRE_UNPAID_BOOKINGS)
    web = start_web()
    sign_in(page, web)
    dialogs: list[str] = []

    # Then the page lists all three, newest first
    expect(job_rows(page)).to_have_count(3, timeout=LIVE_MS)
    assert job_rows(page).evaluate_all("rows => rows.map(r => Number(r.dataset.job))") == [sweep, *emails[::-1]]
    expect(queue_cell(page, "booking-expiry", "dead_lettered")).to_have_text("1")
    expect(queue_cell(page, EMAILS_QUEUE, "dead_lettered")).to_have_text("2")

    # When the admin shows the emails queue only
    page.select_option("#queue-filter", EMAILS_QUEUE)

    # Then only its two jobs are listed
    expect(job_rows(page)).to_have_count(2)
    expect(page.locator('#failed-rows [data-field="queue"]')).to_have_text([EMAILS_QUEUE, EMAILS_QUEUE])

    # When they click Flush and then think better of it
    page.once("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.get_by_role("button", name="Flush").click()

    # Then they were asked about that queue, and nothing is flushed
    wait_for_refresh(page)
    assert len(dialogs) == 1 and EMAILS_QUEUE in dialogs[0]
    expect(job_rows(page)).to_have_count(2)
    assert len(failed_rows(clean)) == 3 and audit(clean) == []

    # When they click Flush and accept
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_response(lambda r: r.request.method == "DELETE") as flushed:
        page.get_by_role("button", name="Flush").click()

    # Then the emails queue's jobs are gone for good, from the page and from PostgreSQL, the sweep kept
    assert flushed.value.status == 200 and flushed.value.url.endswith(f"/api/jobs/failed?queue={EMAILS_QUEUE}")
    expect(page.get_by_role("status")).to_have_text("2 jobs flushed.")
    expect(page.get_by_text("No failed jobs.")).to_be_visible()
    expect(job_rows(page)).to_have_count(0)
    assert [row["id"] for row in failed_rows(clean)] == [sweep]
    assert audit(clean) == [("flush", EMAILS_QUEUE, 2, "admin")]
    expect(queue_cell(page, EMAILS_QUEUE, "dead_lettered")).to_have_text("0", timeout=LIVE_MS)

    # When they show the booking-expiry queue and click "Retry all"
    page.select_option("#queue-filter", "booking-expiry")
    expect(job_rows(page)).to_have_count(1)
    with page.expect_response(lambda r: r.url.endswith("/api/jobs/failed/retry-all")) as retried:
        page.get_by_role("button", name="Retry all").click()

    # Then that queue's jobs are put back on it, and the table is empty for every queue
    assert retried.value.status == 202 and retried.value.request.post_data_json == {"queue": "booking-expiry"}
    expect(page.get_by_role("status")).to_have_text("1 job retried.")
    expect(page.get_by_text("No failed jobs.")).to_be_visible()
    assert failed_rows(clean) == []
    assert audit(clean) == [("flush", EMAILS_QUEUE, 2, "admin"), ("retry", "booking-expiry", 1, "admin")]
    page.select_option("#queue-filter", "")
    wait_for_refresh(page)
    expect(page.get_by_text("No failed jobs.")).to_be_visible()
    expect(page.get_by_role("button", name="Flush")).to_be_disabled()
    expect(page.get_by_role("button", name="Retry all")).to_be_disabled()


def test_an_exception_carrying_html_is_shown_as_text(clean, start_web, page: Page):
    # Given a job that failed with HTML in its exception
    job_id = store(clean, SEND_ETICKET_EMAIL, 42, exception=ValueError(HOSTILE))
    web = start_web()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    # When the admin opens the jobs page and its traceback
    sign_in(page, web)
    row = page.locator(f'#failed-rows tr[data-job="{job_id}"]')
    expect(row).to_be_visible(timeout=LIVE_MS)
    row.locator("summary").click()

    # Then the exception and the traceback show the markup as text, and no element was made of it
    expect(row.locator("summary")).to_have_text(f"ValueError: {HOSTILE}")
    expect(row.locator("pre")).to_contain_text(HOSTILE)
    expect(row.locator('[data-field="job"]')).to_have_text("send_eticket_email(42)")
    wait_for_refresh(page)
    assert page.locator("#failed-jobs img").count() == 0
    assert page.locator("img").count() == 0
    assert dialogs == []

    # When the admin's session ends while the page is open (a poll answered meanwhile renews the session
    # cookie, as every authenticated answer does: cleared again until the page has left)
    login_page = re.compile(r"/admin/login\?next=(/|%2F)admin(/|%2F)jobs$")

    def signed_out() -> bool:
        page.context.clear_cookies()
        return bool(login_page.search(page.url))

    # Then the page's next poll sends them to the login form, which brings them back here
    wait_until(signed_out, timeout=LIVE_MS / 1000, interval=0.5, what="the page to go to the login form")
    expect(page).to_have_url(login_page)

"""The admin jobs page past its first 100 failed jobs, searched, and one job deleted, in a real headless Chromium
against a real sync-api."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from antrian.messages import SEND_ETICKET_EMAIL, SYNC_STUDENT_PAYMENT
from tests.jobs.helpers import failed_rows, store
from tests.jobs.test_admin_jobs_page import LIVE_MS, audit, job_rows, sign_in


def shown_ids(page: Page) -> list[int]:
    return [int(i) for i in job_rows(page).evaluate_all("rows => rows.map(r => r.dataset.job)")]


def test_the_jobs_page_pages_past_100_searches_and_deletes_one_job(clean, start_web, page: Page):
    web = start_web()
    ids = [store(clean, SEND_ETICKET_EMAIL, 1000 + n) for n in range(130)]
    odd = store(clean, SYNC_STUDENT_PAYMENT, 7, 1, exception=RuntimeError("school API said siswa_tidak_ada"))
    newest_first = [odd, *reversed(ids)]

    sign_in(page, web)
    expect(job_rows(page)).to_have_count(100, timeout=LIVE_MS)
    assert shown_ids(page) == newest_first[:100]
    expect(page.locator("#failed-shown")).to_have_text("(showing 1–100 of 131)")
    expect(page.locator("#page")).to_have_text("page 1 of 2")
    expect(page.locator("#newer")).to_be_disabled()

    # The next page: the 31 oldest
    page.click("#older")
    expect(job_rows(page)).to_have_count(31, timeout=LIVE_MS)
    assert shown_ids(page) == newest_first[100:]
    expect(page.locator("#failed-shown")).to_have_text("(showing 101–131 of 131)")
    expect(page.locator("#older")).to_be_disabled()
    page.click("#newer")
    expect(job_rows(page)).to_have_count(100, timeout=LIVE_MS)

    # A search by exception text, then by a booking id in the arguments
    page.fill("#search", "SISWA_TIDAK")
    expect(page.locator("#failed-shown")).to_have_text("(1)", timeout=LIVE_MS)
    assert shown_ids(page) == [odd]
    expect(page.locator("#pager")).to_be_hidden()
    page.fill("#search", "1042")
    target = ids[42]
    expect(page.locator(f'#failed-rows tr[data-job="{target}"]')).to_be_visible(timeout=LIVE_MS)
    expect(job_rows(page)).to_have_count(1, timeout=LIVE_MS)

    # Deleting that one job from its row removes exactly it
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator(f'#failed-rows tr[data-job="{target}"]').get_by_role("button", name="Delete").click()
    expect(page.locator("#message")).to_have_text(f"Job {target} deleted.", timeout=LIVE_MS)
    expect(job_rows(page)).to_have_count(0, timeout=LIVE_MS)
    assert [row["id"] for row in failed_rows(clean)] == sorted(set(newest_first) - {target})
    assert audit(clean) == [("forget", "emails", 1, "admin")]

"""The admin sync page's run history in headless Chromium: a stalled run cancelled with its button, a new run
started from the page and finished, both listed with exact counts."""

from __future__ import annotations

import requests
from playwright.sync_api import Page, expect

from antrian.cli.demo import seed_students
from tests.support import API_TOKEN, wait_until
from tests.sync_api.sync.helpers import assert_exact_outcome, wait_for_run
from tests.sync_api.sync.stalled import get_run, start_stalled_run

STUDENTS = 30


def test_a_stalled_run_is_cancelled_from_the_page_and_a_new_one_finishes(
    clean, start_school_api, start_worker, start_web, auth, page: Page
):
    # Given a stalled run: one student's job lost, all the others done
    seed_students(clean, STUDENTS)
    upstream = start_school_api()
    web = start_web()
    run_id, _lost = start_stalled_run(clean, web, auth)
    start_worker(upstream, threads=4)
    wait_until(lambda: get_run(web, auth, run_id)["processed"] == STUDENTS - 1, timeout=60,
               what="every student but the lost one processed")

    # When the admin signs in and opens the sync page
    page.goto(f"{web}/admin/login?next=/admin/sync-pembayaran")
    page.fill("#token", API_TOKEN)
    page.click("#login")
    expect(page).to_have_url(f"{web}/admin/sync-pembayaran")

    # Then the run history shows the running run with its counts and a Cancel button
    row = page.locator(f'#runs tr[data-run="{run_id}"]')
    expect(row.locator("td").nth(1)).to_have_text("running")
    expect(row.locator("td").nth(2)).to_have_text(f"{STUDENTS - 1}/{STUDENTS}")
    expect(page.locator("#start")).to_be_disabled()

    # When they click Cancel
    with page.expect_response(lambda r: r.url.endswith(f"/api/sync-runs/{run_id}/cancel")) as cancelled:
        page.get_by_role("button", name=f"Cancel run {run_id}").click()

    # Then the run is cancelled through the JSON API, with its exact counts, and a new run may start
    assert cancelled.value.status == 200
    expect(page.locator("#message")).to_have_text(
        f"Run {run_id} cancelled: {STUDENTS - 1} of {STUDENTS} students processed.")
    expect(row.locator("td").nth(1)).to_have_text("cancelled")
    expect(row.locator("button")).to_have_count(0)
    expect(page.locator("#state")).to_have_text("cancelled")
    expect(page.locator("#start")).to_be_enabled()
    assert get_run(web, auth, run_id)["status"] == "cancelled"

    # When they start a new run from the page
    with page.expect_response(lambda r: r.url.endswith("/admin/sync-pembayaran/start")) as started:
        page.get_by_role("button", name="Start sync").click()
    assert started.value.status == 202
    new_id = started.value.json()["id"]

    # Then it finishes with exact counts, and the history lists both, newest first
    assert_exact_outcome(clean, wait_for_run(web, auth, new_id, timeout=60), STUDENTS, set())
    expect(page.locator("#state")).to_have_text("finished", timeout=15_000)
    expect(page.locator("#runs tr")).to_have_count(2)
    expect(page.locator("#runs tr td:first-child")).to_have_text([str(new_id), str(run_id)])
    expect(page.locator(f'#runs tr[data-run="{new_id}"] td').nth(2)).to_have_text(f"{STUDENTS}/{STUDENTS}")
    expect(row.locator("td").nth(2)).to_have_text(f"{STUDENTS - 1}/{STUDENTS}")
    assert requests.get(f"{web}/api/sync-runs", headers=auth, timeout=5).json()["total"] == 2

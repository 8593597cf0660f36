"""The admin sync page in a real headless Chromium, against a real sync-api, sync-worker and school API."""

from __future__ import annotations

import re

import requests
from playwright.sync_api import Page, expect

from antrian.cli.demo import seed_students
from tests.support import API_TOKEN
from tests.sync_api.sync.helpers import expected_failures

STUDENTS, PERMANENT = 200, 0.05
#: The keys of the old admin page's progress JSON, which the new page keeps answering.
OLD_PROGRESS_SHAPE = {"total", "processed", "failed", "percent", "isRunning", "successCount"}
#: Milliseconds Playwright waits for a run to be shown finished (the run itself takes a few seconds).
RUN_TIMEOUT_MS = 40_000


def _record_page_changes(page: Page) -> None:
    """Keep, in the page, every value the bar and the status took, to prove the page updated live."""
    page.evaluate(
        """() => {
          window.__seen = {bar: [], state: []};
          const bar = document.getElementById("bar"), state = document.getElementById("state");
          new MutationObserver(() => window.__seen.bar.push(Number(bar.getAttribute("aria-valuenow"))))
            .observe(bar, {attributes: true, attributeFilter: ["aria-valuenow"]});
          new MutationObserver(() => window.__seen.state.push(state.textContent))
            .observe(state, {childList: true, characterData: true, subtree: true});
        }"""
    )


def test_admin_runs_a_sync_from_the_page_and_sees_it_finish(
    clean, start_school_api, start_worker, start_web, auth, page: Page, tmp_path
):
    # Given 200 students, a school API that refuses 5% for good and answers slowly enough that
    # the run is visibly under way, one single-threaded sync-worker, and the sync-api
    seed_students(clean, STUDENTS)
    failures = expected_failures(STUDENTS, transient_rate=0, permanent_rate=PERMANENT)
    assert 3 < len(failures) < 25  # the development API really does refuse some
    upstream = start_school_api("--permanent-rate", str(PERMANENT), "--latency-ms", "5")
    start_worker(upstream, processes=1, threads=4)
    web = start_web()

    # And the progress JSON guards itself: no cookie and no bearer is a 401 with a JSON error
    anonymous = requests.get(f"{web}/admin/sync-pembayaran/progress", timeout=5)
    assert anonymous.status_code == 401
    assert anonymous.headers["Content-Type"].startswith("application/json")
    assert set(anonymous.json()) == {"error"} and anonymous.json()["error"]
    # And with the bearer it answers the old admin page's shape (nothing run yet)
    before = requests.get(f"{web}/admin/sync-pembayaran/progress", headers=auth, timeout=5)
    assert before.status_code == 200
    assert before.json() == {
        "total": 0, "processed": 0, "failed": 0, "percent": 0.0, "isRunning": False, "successCount": 0,
    }

    # When the admin opens the sync page without a session
    page.goto(f"{web}/admin/sync-pembayaran")

    # Then they are sent to the login form, which remembers where they were going
    expect(page).to_have_url(re.compile(r"/admin/login\?next=(/|%2F)admin(/|%2F)sync-pembayaran$"))
    expect(page.locator("#token")).to_be_visible()
    expect(page.locator("input[name=next]")).to_have_value("/admin/sync-pembayaran")

    # When they sign in with a wrong token
    page.fill("#token", "not-the-token")
    with page.expect_response(lambda r: r.request.method == "POST" and "/admin/login" in r.url) as wrong:
        page.click("#login")

    # Then the login form answers 401, says so and stays the login form, with no session given
    assert wrong.value.status == 401
    expect(page.get_by_role("alert")).to_have_text("That token is not right.")
    expect(page).to_have_url(re.compile(r"/admin/login"))
    expect(page.locator("#token")).to_be_visible()
    assert not [c for c in page.context.cookies() if c["name"] == "antrian_session"]

    # When they sign in with the right token
    page.fill("#token", API_TOKEN)
    page.click("#login")

    # Then they land on the sync page with an HttpOnly session cookie that scripts cannot read
    expect(page).to_have_url(f"{web}/admin/sync-pembayaran")
    expect(page.get_by_role("heading", name="Sync pembayaran siswa")).to_be_visible()
    cookie = next(c for c in page.context.cookies() if c["name"] == "antrian_session")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert "antrian_session" not in page.evaluate("document.cookie")
    expect(page.locator("#state")).to_have_text("idle")
    expect(page.locator("#start")).to_be_enabled()

    # When they click "Start sync"
    _record_page_changes(page)
    with page.expect_response(lambda r: r.url.endswith("/admin/sync-pembayaran/start")) as started:
        page.get_by_role("button", name="Start sync").click()

    # Then a run starts for every student and the button stays disabled while it runs
    assert started.value.status == 202
    run_id = started.value.json()["id"]
    expect(page.locator("#message")).to_have_text(f"Run {run_id} started for {STUDENTS} students.")
    expect(page.locator("#total")).to_have_text(str(STUDENTS))

    # And the bar fills up to 100% and the run is shown finished
    page.wait_for_function(
        """() => document.getElementById("bar").getAttribute("aria-valuenow") === "100"
              && document.getElementById("state").textContent === "finished" """,
        timeout=RUN_TIMEOUT_MS,
    )
    expect(page.locator("#percent")).to_have_text("100.00%")
    expect(page.locator("#bar")).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#bar-fill")).to_have_attribute("style", re.compile(r"width: 100%"))
    expect(page.locator("#state")).to_have_text("finished")
    expect(page.locator("#start")).to_be_enabled()

    # And the counts are exact
    expect(page.locator("#total")).to_have_text(str(STUDENTS))
    expect(page.locator("#processed")).to_have_text(str(STUDENTS))
    expect(page.locator("#failed")).to_have_text(str(len(failures)))
    expect(page.locator("#success")).to_have_text(str(STUDENTS - len(failures)))

    # And the failures table lists exactly the students the school API refused, in idperson order
    rows = page.locator("#failures tr")
    expect(rows).to_have_count(len(failures))
    listed = [int(text) for text in page.locator("#failures tr td:first-child").all_inner_texts()]
    assert listed == sorted(failures)
    for error in page.locator("#failures tr td:nth-child(3)").all_inner_texts():
        assert "tidak ditemukan" in error
    assert all(name.strip() for name in page.locator("#failures tr td:nth-child(2)").all_inner_texts())

    # And the page really showed the run live: "running" before "finished", the bar never going back
    seen = page.evaluate("window.__seen")
    assert "running" in seen["state"], seen
    assert seen["state"][-1] == "finished"
    assert seen["state"].index("running") < len(seen["state"]) - 1
    assert seen["bar"] == sorted(seen["bar"]) and seen["bar"][-1] == 100, seen

    # And the progress JSON, with the bearer, says the same in the old page's shape (plus the run id)
    progress = requests.get(f"{web}/admin/sync-pembayaran/progress", headers=auth, timeout=5)
    assert progress.status_code == 200
    body = progress.json()
    assert set(body) == OLD_PROGRESS_SHAPE | {"id"}
    assert body == {
        "id": run_id, "total": STUDENTS, "processed": STUDENTS, "failed": len(failures), "percent": 100.0,
        "isRunning": False, "successCount": STUDENTS - len(failures),
    }

    # And a screenshot of the finished page is kept with the test's files
    screenshot = tmp_path / "admin-sync-pembayaran.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000

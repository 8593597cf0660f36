"""Failed jobs found by what they were about (a booking id) or why they failed, deleted one by one, and pruned
by age: by real sync-api, `antrian` and booking-expiry processes."""

from __future__ import annotations

import subprocess

import pytest
import requests
from sqlalchemy import text

from antrian.messages import EXPIRE_UNPAID_BOOKINGS, PRUNE_FAILED_JOBS, SEND_ETICKET_EMAIL, SYNC_STUDENT_PAYMENT
from antrian.runtime.broker import make_broker
from tests.jobs.helpers import failed_rows, store
from tests.support import BIN, ROOT, base_env, log_events, settings_for_tests, settled, wait_until


@pytest.fixture
def web(clean, start_web):
    return start_web()


def ids(body: dict) -> list[int]:
    return [item["id"] for item in body["items"]]


def actions(engine) -> list[tuple]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(
            text("SELECT action, queue_name, jobs, source FROM failed_job_actions ORDER BY id"))]


def test_search_finds_failed_jobs_by_a_booking_id_and_by_exception_text_with_like_characters_literal(web, auth, clean):
    ticket = store(clean, SEND_ETICKET_EMAIL, 4242, exception=ValueError("booking K7QM-2XH9 is pending, not paid"))
    other_ticket = store(clean, SEND_ETICKET_EMAIL, 17, exception=ValueError("SMTP 550 mailbox unavailable"))
    literal = store(clean, SYNC_STUDENT_PAYMENT, 77, 1, exception=RuntimeError("discount 100%_off refused"))
    lookalike = store(clean, SYNC_STUDENT_PAYMENT, 78, 1, exception=RuntimeError("discount 1000 off refused"))
    store(clean, EXPIRE_UNPAID_BOOKINGS)

    def search(q: str, **params: str) -> dict:
        response = requests.get(f"{web}/api/jobs/failed", params={"q": q, **params}, headers=auth, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    # By a booking id (in the arguments), by exception text ignoring case
    assert ids(search("4242")) == [ticket] and search("4242")["total"] == 1
    assert ids(search("k7qm-2xh9 IS PENDING")) == [ticket]
    assert ids(search("mailbox unavailable")) == [other_ticket]
    # % and _ are plain characters: "100%_" does not match "1000 o"
    assert ids(search("100%_off")) == [literal]
    assert ids(search("%")) == [literal] and ids(search("_")) == [literal]
    assert lookalike in ids(search("1000"))
    # With the queue filter and paging; nothing found is an empty list
    assert ids(search("refused", queue="sync-pembayaran")) == [lookalike, literal]
    assert ids(search("refused", limit="1", offset="1")) == [literal] and search("refused", limit="1")["total"] == 2
    assert search("nothing like this") == {"items": [], "total": 0}
    assert ids(search("discount", queue="emails")) == []


def test_delete_one_failed_job_removes_exactly_it_and_is_audited(web, auth, clean):
    kept = store(clean, SEND_ETICKET_EMAIL, 1)
    gone = store(clean, SEND_ETICKET_EMAIL, 2)
    also_kept = store(clean, SYNC_STUDENT_PAYMENT, 3, 1)

    response = requests.delete(f"{web}/api/jobs/failed/{gone}", headers=auth, timeout=10)
    assert response.status_code == 200 and response.json() == {"deleted": 1, "id": gone}
    assert [row["id"] for row in failed_rows(clean)] == [kept, also_kept]
    again = requests.delete(f"{web}/api/jobs/failed/{gone}", headers=auth, timeout=10)
    assert again.status_code == 404 and again.json() == {"error": f"failed job {gone} not found"}
    assert requests.delete(f"{web}/api/jobs/failed/-1", headers=auth, timeout=10).status_code == 404
    assert requests.delete(f"{web}/api/jobs/failed/{kept}", timeout=10).status_code == 401
    assert [row["id"] for row in failed_rows(clean)] == [kept, also_kept]
    assert actions(clean) == [("forget", "emails", 1, "api")]


def antrian(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "antrian"), *args], env=base_env(**env), cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_antrian_jobs_forget_deletes_the_named_jobs_and_refuses_an_unknown_one(clean):
    first, second, third = (store(clean, SEND_ETICKET_EMAIL, n) for n in (1, 2, 3))

    result = antrian("jobs", "forget", str(first), str(third))
    assert (result.returncode, result.stdout) == (0, f"forgot failed job {first}\nforgot failed job {third}\n")
    assert [row["id"] for row in failed_rows(clean)] == [second]

    unknown = antrian("jobs", "forget", str(first))
    assert unknown.returncode == 1 and unknown.stderr.strip() == f"Error: failed job {first} not found"
    assert [row["id"] for row in failed_rows(clean)] == [second]
    assert actions(clean) == [("forget", "emails", 1, "cli"), ("forget", "emails", 1, "cli")]
    listed = antrian("jobs", "failed", "--search", "[2]")
    assert listed.returncode == 0 and "1 failed job;" in listed.stdout, listed.stdout


def test_the_scheduled_prune_deletes_exactly_the_failed_jobs_past_their_retention(clean, start_dramatiq):
    ancient = store(clean, SEND_ETICKET_EMAIL, 1, days_ago=30)
    old = store(clean, SYNC_STUDENT_PAYMENT, 2, 1, days_ago=4)
    recent = store(clean, SEND_ETICKET_EMAIL, 3, days_ago=2)
    fresh = store(clean, EXPIRE_UNPAID_BOOKINGS)
    with clean.begin() as connection:  # just inside and just outside 3 days
        connection.execute(text("UPDATE failed_jobs SET failed_at = now() - interval '3 days' + interval '1 minute' "
                                "WHERE id = :id"), {"id": recent})
    worker = start_dramatiq("booking-expiry", processes=1, threads=2, FAILED_JOBS_RETENTION_DAYS="3")

    # The schedule enqueues it (once per hour); here it is sent as the scheduler does
    settings = settings_for_tests()
    broker = make_broker(settings)
    try:
        PRUNE_FAILED_JOBS.send(broker)
    finally:
        broker.close()

    wait_until(lambda: log_events(worker.log(), event="failed_jobs_pruned"), timeout=30, what="the prune")
    settled()
    assert [row["id"] for row in failed_rows(clean)] == [recent, fresh]
    [line] = log_events(worker.log(), event="failed_jobs_pruned")
    assert (line["jobs"], line["retention_days"]) == (2, 3)
    assert sorted(actions(clean)) == [("prune", "emails", 1, "schedule"), ("prune", "sync-pembayaran", 1, "schedule")]
    assert ancient and old  # both gone

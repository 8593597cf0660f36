"""The operations API: failed jobs listed, shown, flushed; bad input a clear 4xx that changes nothing; queue counts."""

from __future__ import annotations

import threading

import pytest
import requests

from antrian.messages import EMAILS_QUEUE, EXPIRE_UNPAID_BOOKINGS, SEND_ETICKET_EMAIL, SYNC_STUDENT_PAYMENT
from tests.jobs.helpers import failed_rows, store
from tests.support import free_port, metric, outbox_drained, wait_until
from tests.sync_api.bookings.helpers import book, create_tour


@pytest.fixture
def web(clean, start_web):
    return start_web()


def test_failed_jobs_are_listed_newest_first_by_queue_and_shown_with_their_traceback(web, auth, clean):
    old = store(clean, SYNC_STUDENT_PAYMENT, 7, 1, days_ago=10)
    mail = store(clean, SEND_ETICKET_EMAIL, 42, exception=ValueError("no such booking"))
    sweep = store(clean, EXPIRE_UNPAID_BOOKINGS)
    body = requests.get(f"{web}/api/jobs/failed", headers=auth).json()
    assert body["total"] == 3 and [item["id"] for item in body["items"]] == [sweep, mail, old]
    item = body["items"][1]
    assert (item["queue"], item["actor"], item["args"], item["attempts"]) == ("emails", "send_eticket_email", [42], 3)
    assert item["exception"] == "ValueError: no such booking"
    only = requests.get(f"{web}/api/jobs/failed?queue=emails", headers=auth).json()
    assert only["total"] == 1 and only["items"][0]["id"] == mail
    paged = requests.get(f"{web}/api/jobs/failed?limit=1&offset=1", headers=auth).json()
    assert paged["total"] == 3 and [i["id"] for i in paged["items"]] == [mail]
    shown = requests.get(f"{web}/api/jobs/failed/{mail}", headers=auth).json()
    assert shown == item and shown["message_id"] and shown["kwargs"] == {}

    # A flush of what failed more than a week ago, then of one queue, then of everything
    response = requests.delete(f"{web}/api/jobs/failed?older_than=7d", headers=auth)
    assert response.status_code == 200 and response.json()["flushed"] == 1
    assert [row["id"] for row in failed_rows(clean)] == [mail, sweep]
    assert requests.delete(f"{web}/api/jobs/failed?queue=emails", headers=auth).json()["flushed"] == 1
    assert requests.delete(f"{web}/api/jobs/failed", headers=auth).json()["flushed"] == 1
    assert failed_rows(clean) == []
    page = requests.get(web.metrics).text
    assert 'antrian_failed_jobs_flushed_total{queue="sync-pembayaran"} 1.0' in page
    assert 'antrian_failed_jobs_flushed_total{queue="emails"} 1.0' in page


def test_the_stored_failed_jobs_gauge_counts_by_queue_and_actor(web, clean):
    for n in range(3):
        store(clean, SEND_ETICKET_EMAIL, n)
    store(clean, EXPIRE_UNPAID_BOOKINGS)
    assert metric(web.metrics, "antrian_failed_jobs", queue="emails", actor="send_eticket_email") == 3
    assert metric(web.metrics, "antrian_failed_jobs", queue="booking-expiry") == 1


BAD_REQUESTS = [
    # A path that is no failed job's id (a positive bigint) names nothing: 404, as the document says.
    ("get", "/api/jobs/failed/abc", None, 404, "not found"),
    ("get", "/api/jobs/failed/0", None, 404, "not found"),
    ("post", "/api/jobs/failed/-1/retry", None, 404, "not found"),
    ("post", f"/api/jobs/failed/{2**63}/retry", None, 404, "not found"),
    ("get", "/api/jobs/failed/%C2%B2", None, 404, "not found"),
    ("get", "/api/jobs/failed/" + "9" * 30, None, 404, "not found"),
    ("get", "/api/jobs/failed?queue=nope", None, 400, "queue must be one of sync-pembayaran, emails, booking-expiry"),
    ("get", "/api/jobs/failed?limit=0", None, 400, "limit must be between 1 and 1000"),
    ("get", f"/api/jobs/failed?offset={2**64}", None, 400, f"offset must be between 0 and {2**63 - 1}"),
    ("get", "/api/jobs/failed?offset=%C2%B2", None, 400, "offset must be a whole number"),
    ("post", "/api/jobs/failed/retry-all", b"{not json", 400, "malformed JSON body"),
    ("post", "/api/jobs/failed/retry-all", b"[1]", 400, "the body must be a JSON object"),
    ("post", "/api/jobs/failed/retry-all", b'{"queue": 5}', 400,
     "queue must be one of sync-pembayaran, emails, booking-expiry"),
    ("post", "/api/jobs/failed/retry-all", b'{"queues": "emails"}', 400, "unknown field(s): queues"),
    ("delete", "/api/jobs/failed?older_than=soon", None, 400,
     "older_than: 'soon' is not an age such as 7d, 12h, 30m or 90s"),
    ("delete", "/api/jobs/failed?queue=emails.XQ", None, 400,
     "queue must be one of sync-pembayaran, emails, booking-expiry"),
    ("get", "/api/jobs/failed/999", None, 404, "failed job 999 not found"),
    ("post", "/api/jobs/failed/999/retry", None, 404, "failed job 999 not found"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "message"), BAD_REQUESTS)
def test_bad_input_gets_a_clear_4xx_and_changes_nothing(web, auth, clean, method, path, body, status, message):
    job_id = store(clean, SEND_ETICKET_EMAIL, 1)
    before = failed_rows(clean)
    response = requests.request(method, f"{web}{path}", headers={**auth, "Content-Type": "application/json"},
                                data=body)
    assert (response.status_code, response.json()) == (status, {"error": message})
    assert failed_rows(clean) == before and before[0]["id"] == job_id


@pytest.mark.parametrize(("method", "path"), [
    ("get", "/api/jobs/failed"), ("get", "/api/jobs/failed/1"), ("post", "/api/jobs/failed/1/retry"),
    ("post", "/api/jobs/failed/retry-all"), ("delete", "/api/jobs/failed"), ("get", "/api/queues"),
])
def test_every_operations_route_needs_the_token(web, clean, method, path):
    store(clean, SEND_ETICKET_EMAIL, 1)
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = requests.request(method, f"{web}{path}", headers=headers)
        assert (response.status_code, response.json()) == (401, {"error": "missing or wrong API token"})
    assert len(failed_rows(clean)) == 1


def test_queues_show_ready_unacknowledged_delayed_failed_consumers_and_rates(
    web, auth, clean, smtp_server, start_dramatiq
):
    # A mailer with one thread whose SMTP server hangs on the first email: that message is unacknowledged
    release = threading.Event()
    smtp_server.on_accept = lambda message: release.wait(60)
    store(clean, SEND_ETICKET_EMAIL, 9)
    tour = create_tour(web, auth, quota=50)
    for _ in range(6):
        book(web, auth, tour["id"], quantity=1)
    start_dramatiq("mailer", threads=1, **smtp_server.env())

    def emails():
        body = requests.get(f"{web}/api/queues", headers=auth).json()
        assert [item["name"] for item in body["items"]] == ["booking-expiry", "emails", "sync-pembayaran"]
        return next(item for item in body["items"] if item["name"] == EMAILS_QUEUE)

    # The management API refreshes its numbers every few seconds
    busy = wait_until(lambda: (q := emails())["unacknowledged"] >= 1 and q["consumers"] == 1 and q, timeout=30,
                      interval=1, what="the mailer's message unacknowledged")
    assert busy["source"] == "management"
    assert busy["ready"] + busy["unacknowledged"] == 6 and busy["dead_lettered"] == 1
    assert busy["delayed"] == 0 and busy["publish_rate"] >= 0 and busy["ack_rate"] >= 0
    # The same numbers are metrics of sync-api, for the dashboard
    assert metric(web.metrics, "antrian_queue_consumers", queue="emails") == 1
    assert metric(web.metrics, "antrian_queue_messages", queue="emails", state="unacknowledged") >= 1
    release.set()
    smtp_server.on_accept = None
    wait_until(lambda: (q := emails())["ready"] == 0 and q["unacknowledged"] == 0, timeout=60, interval=1,
               what="the queue drained")


def test_queues_fall_back_to_amqp_counts_without_the_management_api(clean, start_web, auth):
    web = start_web(RABBITMQ_MANAGEMENT_URL=f"http://guest:guest@127.0.0.1:{free_port()}")
    store(clean, EXPIRE_UNPAID_BOOKINGS)
    tour = create_tour(web, auth, quota=5)
    book(web, auth, tour["id"], quantity=1)
    outbox_drained(clean)  # the outbox relay published the invoice job
    body = requests.get(f"{web}/api/queues", headers=auth).json()
    items = {item["name"]: item for item in body["items"]}
    assert items["emails"] == {
        "name": "emails", "ready": 1, "unacknowledged": None, "delayed": None, "dead_lettered": 0, "consumers": 0,
        "publish_rate": None, "ack_rate": None, "source": "amqp",
        "wait_p50_seconds": None, "wait_p95_seconds": None, "wait_messages": 0,  # no message started yet
        "paused": False, "paused_at": None, "paused_by": None,
    }
    assert items["booking-expiry"]["dead_lettered"] == 1

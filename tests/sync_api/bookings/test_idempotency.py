"""``Idempotency-Key`` on ``POST /api/bookings`` through the real sync-api (gunicorn), PostgreSQL and RabbitMQ."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import text

from antrian.errors import Conflict
from sync_api.bookings import idempotency
from tests.support import outbox_drained, take_messages
from tests.sync_api.bookings.helpers import book, create_tour, quota


@pytest.fixture
def web(clean, start_web):
    return start_web()


def body_for(tour_id: int, quantity: int = 3) -> dict:
    return {"tour_id": tour_id, "quantity": quantity, "customer_name": "Budi Santoso",
            "customer_email": "budi@example.com"}


def post(web, auth, body, key: str | bytes | None):
    headers = dict(auth) if key is None else {**auth, "Idempotency-Key": key}
    return requests.post(f"{web}/api/bookings", headers=headers, json=body, timeout=60)


def count(engine, sql: str) -> int:
    with engine.connect() as connection:
        return connection.execute(text(sql)).scalar_one()


def test_50_concurrent_requests_with_one_key_book_once_and_send_one_invoice(web, auth, engine):
    tour = create_tour(web, auth, quota=10)
    body = body_for(tour["id"], quantity=3)

    def attempt(_index: int):
        with requests.Session() as session:
            response = session.post(f"{web}/api/bookings", headers={**auth, "Idempotency-Key": "order-42"},
                                    json=body, timeout=60)
            return response.status_code, response.json(), response.headers.get("Idempotent-Replayed")

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(attempt, range(50)))

    assert [status for status, _, _ in results] == [201] * 50, results
    answers = {json.dumps(answer, sort_keys=True) for _, answer, _ in results}
    assert len(answers) == 1, answers
    first = results[0][1]
    assert first["status"] == "pending" and first["quantity"] == 3 and first["total_amount"] == "4500000.00"
    replayed = [header for _, _, header in results]
    assert replayed.count("true") == 49 and replayed.count(None) == 1, replayed

    assert count(engine, "SELECT count(*) FROM bookings") == 1
    assert quota(engine, tour["id"]) == 7
    outbox_drained(engine)
    [invoice] = take_messages("emails")
    assert (invoice["actor_name"], invoice["args"]) == ("send_invoice_email", [first["id"]])

    # A retry long after (within 24 hours) still gets the first answer and changes nothing.
    again = post(web, auth, body, "order-42")
    assert again.status_code == 201 and again.json() == first and again.headers["Idempotent-Replayed"] == "true"
    assert count(engine, "SELECT count(*) FROM bookings") == 1 and quota(engine, tour["id"]) == 7
    outbox_drained(engine)
    assert take_messages("emails") == []


def test_the_same_key_with_another_body_is_a_422_and_changes_nothing(web, auth, engine):
    tour = create_tour(web, auth, quota=10)
    first = post(web, auth, body_for(tour["id"]), "key-A")
    assert first.status_code == 201, first.text

    for other in (body_for(tour["id"], quantity=1), {**body_for(tour["id"]), "customer_name": "Siti"}):
        response = post(web, auth, other, "key-A")
        assert response.status_code == 422, response.text
        assert response.json() == {
            "error": 'Idempotency-Key "key-A" was used with a different request; send a new key for a new request'
        }
        assert "Idempotent-Replayed" not in response.headers

    # The same body written otherwise (key order, spaces) is the same request: replayed.
    reordered = json.dumps(dict(reversed(list(body_for(tour["id"]).items()))), indent=2)
    same = requests.post(f"{web}/api/bookings", data=reordered,
                         headers={**auth, "Idempotency-Key": "key-A", "Content-Type": "application/json"})
    assert same.status_code == 201 and same.json() == first.json() and same.headers["Idempotent-Replayed"] == "true"

    # The same key and body on another key: another booking.
    other_key = post(web, auth, body_for(tour["id"]), "key-B")
    assert other_key.status_code == 201 and other_key.json()["id"] != first.json()["id"]
    assert "Idempotent-Replayed" not in other_key.headers

    assert count(engine, "SELECT count(*) FROM bookings") == 2 and quota(engine, tour["id"]) == 4
    assert count(engine, "SELECT count(*) FROM idempotency_keys") == 2


def test_a_failed_request_is_not_remembered_so_its_retry_is_decided_afresh(web, auth, engine):
    tour = create_tour(web, auth, quota=2)
    body = body_for(tour["id"], quantity=3)
    too_many = post(web, auth, body, "retry-me")
    assert too_many.status_code == 409 and too_many.json()["seats_left"] == 2, too_many.text
    unknown = post(web, auth, body_for(999_999), "retry-me")
    assert unknown.status_code == 404, unknown.text
    invalid = post(web, auth, {**body, "quantity": 0}, "retry-me")
    assert invalid.status_code == 400, invalid.text
    assert count(engine, "SELECT count(*) FROM idempotency_keys") == 0

    with engine.begin() as connection:  # seats came back (an unpaid booking expired, say)
        connection.execute(text("UPDATE tours SET quota = 5 WHERE id = :id"), {"id": tour["id"]})
    booked = post(web, auth, body, "retry-me")
    assert booked.status_code == 201 and "Idempotent-Replayed" not in booked.headers, booked.text
    replay = post(web, auth, body, "retry-me")
    assert replay.status_code == 201 and replay.json() == booked.json()
    assert count(engine, "SELECT count(*) FROM bookings") == 1 and quota(engine, tour["id"]) == 2


def test_a_key_older_than_24_hours_is_forgotten_and_books_anew(web, auth, engine):
    tour = create_tour(web, auth, quota=10)
    body = body_for(tour["id"], quantity=2)
    first = post(web, auth, body, "yesterday")
    assert first.status_code == 201, first.text
    with engine.begin() as connection:
        connection.execute(text("UPDATE idempotency_keys SET created_at = now() - interval '24 hours 1 second'"))

    second = post(web, auth, body, "yesterday")
    assert second.status_code == 201 and "Idempotent-Replayed" not in second.headers, second.text
    assert second.json()["id"] != first.json()["id"]
    replay = post(web, auth, body, "yesterday")
    assert replay.json() == second.json() and replay.headers["Idempotent-Replayed"] == "true"

    assert count(engine, "SELECT count(*) FROM bookings") == 2 and quota(engine, tour["id"]) == 6
    assert count(engine, "SELECT count(*) FROM idempotency_keys") == 1
    outbox_drained(engine)
    assert sorted(message["args"][0] for message in take_messages("emails")) == sorted(
        [first.json()["id"], second.json()["id"]]
    )


def test_a_bad_key_is_a_400_and_no_key_books_as_before(web, auth, engine):
    tour = create_tour(web, auth, quota=10)
    body = body_for(tour["id"], quantity=1)
    bad = {
        "": "must not be empty",
        "k" * 201: "at most 200 characters",
        "kunci-ü".encode(): "printable ASCII",  # UTF-8 on the wire
        "tab\there": "printable ASCII",
    }
    for key, words in bad.items():
        response = post(web, auth, body, key)
        assert response.status_code == 400, (key, response.text)
        assert words in response.json()["error"] and "Idempotency-Key" in response.json()["error"], response.text
    assert count(engine, "SELECT count(*) FROM bookings") == 0 and quota(engine, tour["id"]) == 10

    longest = post(web, auth, body, "~ !" + "k" * 197)
    assert longest.status_code == 201, longest.text

    plain = [book(web, auth, tour["id"], quantity=1) for _ in range(2)]
    assert [response.status_code for response in plain] == [201, 201]
    assert not any("Idempotent-Replayed" in response.headers for response in plain)
    assert plain[0].json()["id"] != plain[1].json()["id"]
    assert count(engine, "SELECT count(*) FROM bookings") == 3 and quota(engine, tour["id"]) == 7
    assert count(engine, "SELECT count(*) FROM idempotency_keys") == 1


def test_prune_deletes_only_expired_keys(clean, engine):
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO idempotency_keys (route, key, request_hash, response_status, response_body, created_at) "
            "SELECT 'POST /api/bookings', 'k' || n, 'h', 201, '{}', now() - make_interval(hours => n) "
            "FROM generate_series(0, 47) AS n"
        ))
    assert idempotency.prune(engine) == 24  # 24 (by now a moment more) … 47 hours old
    assert count(engine, "SELECT count(*) FROM idempotency_keys") == 24
    assert count(engine, "SELECT count(*) FROM idempotency_keys WHERE created_at < now() - interval '24 hours'") == 0


def test_a_concurrent_request_waits_for_the_first_and_replays_it_or_claims_the_key_if_it_rolled_back(clean, engine):
    """Deterministic: the first request's work is slow, and the second arrives while it runs."""
    started, results = threading.Event(), {}

    def slow(fail: bool):
        def work(connection):
            started.set()
            time.sleep(0.5)  # the second request is now waiting on the key's unique index
            if fail:
                raise Conflict("not enough seats")
            return idempotency.Answer(201, {"id": 1})
        return work

    def second(connection):
        return idempotency.Answer(201, {"id": 2})

    for fail, expected in ((False, idempotency.Answer(201, {"id": 1}, replayed=True)),
                           (True, idempotency.Answer(201, {"id": 2}))):
        started.clear()
        key = f"slow-{fail}"

        def first(key=key, fail=fail):
            try:
                results["first"] = idempotency.once(engine, route="r", key=key, body={"a": 1}, work=slow(fail))
            except Conflict as exc:
                results["first"] = exc

        thread = threading.Thread(target=first)
        thread.start()
        assert started.wait(5)
        began = time.monotonic()
        assert idempotency.once(engine, route="r", key=key, body={"a": 1}, work=second) == expected
        assert time.monotonic() - began > 0.3  # it waited for the first transaction to end
        thread.join()
        assert isinstance(results["first"], Conflict) if fail else results["first"].body == {"id": 1}
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT key, response_body FROM idempotency_keys ORDER BY key")).all()
    assert [tuple(row) for row in stored] == [("slow-False", {"id": 1}), ("slow-True", {"id": 2})]

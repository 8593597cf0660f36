"""One mapping from antrian's errors to HTTP answers, and bad input refused before anything is touched.

Fast tier: the application in process (Flask's test client), pointed at a database and a broker that do
not exist, so any route that reached either would answer 503 instead of the answer checked here.
"""

from __future__ import annotations

import re

import pytest

from antrian.bookings import payments
from antrian.errors import AntrianError, Conflict, DependencyUnavailable, InvalidInput, NotFound, RunAlreadyRunning
from antrian.jobs.failed_jobs import FailedJobNotFound, RetryInterrupted
from sync_api.bookings import booking as bookings
from sync_api.sync.errors import StudentSyncFailed, UpstreamError
from tests.sync_api.web.conftest import AUTH, TOKEN

pytestmark = pytest.mark.fast


def test_every_error_antrian_raises_on_purpose_has_one_root_and_a_status():
    # Given the errors a route may meet, from shared/ and from each domain of sync-api
    statuses = {
        InvalidInput: 400, payments.InvalidNotification: 400, payments.AmountMismatch: 400,
        NotFound: 404, FailedJobNotFound: 404, bookings.TourNotFound: 404, bookings.BookingNotFound: 404,
        payments.UnknownOrder: 404, Conflict: 409, RunAlreadyRunning: 409, bookings.NotEnoughSeats: 409,
        DependencyUnavailable: 503, RetryInterrupted: 503, AntrianError: 500,
    }
    # Then each is an AntrianError carrying its status (workers' errors too, with no status of their own)
    for error, status in statuses.items():
        assert issubclass(error, AntrianError) and error.status == status, error
    assert issubclass(StudentSyncFailed, AntrianError) and issubclass(UpstreamError, AntrianError)


@pytest.mark.parametrize(
    ("raised", "status", "body"),
    [
        (bookings.NotEnoughSeats(7, 2, 3), 409,
         {"error": "not enough seats left: tour 7 has 2 seats left, 3 requested", "seats_left": 2}),
        (bookings.TourNotFound(7), 404, {"error": "tour 7 not found"}),
        (RunAlreadyRunning(5), 409, {"error": "sync run 5 is still running", "id": 5}),
        (RetryInterrupted(4, ConnectionError("gone")), 503,
         {"error": "RabbitMQ stopped confirming after 4 retried jobs (gone); the others are still stored: retry "
                   "them again", "retried": 4}),
        (AntrianError("no free booking code after 10 draws"), 500, {"error": "no free booking code after 10 draws"}),
    ],
)
def test_a_domain_error_becomes_its_answer_in_one_place(client, monkeypatch, raised, status, body):
    # Given the booking service raising an error of the domain
    def create_booking(*args, **kwargs):
        raise raised

    monkeypatch.setattr(bookings, "create_booking", create_booking)
    # When a valid booking request reaches it
    response = client.post("/api/bookings", headers=AUTH, json={
        "tour_id": 7, "quantity": 3, "customer_name": "Budi", "customer_email": "budi@example.com"})
    # Then the one handler answers with the error's status, message and fields
    assert (response.status_code, response.get_json()) == (status, body)


#: The /api/ routes without a token: the gateway's notification (signed), the OpenAPI document and its page.
PUBLIC_API_ROUTES = ("/api/payments/notification", "/api/openapi.json", "/api/docs")


def api_routes(app) -> list[tuple[str, str]]:
    """Every /api/ route with a token (all but the gateway's notification and the API's own document), with
    its ids filled in."""
    routes = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/") or rule.rule in PUBLIC_API_ROUTES:
            continue
        # an ``any(a, b)`` segment takes its first choice, every other one the id 1
        path = re.sub(r"<any\(\s*([^,)\s]+)[^>]*>", r"\1", rule.rule)
        path = re.sub(r"<[^>]+>", "1", path)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            routes.append((method, path))
    return routes


def test_every_api_route_but_the_gateways_needs_the_token(app, client):
    routes = api_routes(app)
    assert len(routes) >= 12
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response = client.open(path, method=method, headers=headers)
            assert response.status_code == 401, (method, path, response.get_json())
            assert response.get_json() == {"error": "missing or wrong API token"}


@pytest.mark.parametrize(
    ("method", "path", "body", "message"),
    [
        ("post", "/api/bookings", b"{not json", "malformed JSON body"),
        ("post", "/api/bookings", b"[1, 2]", "the body must be a JSON object"),
        ("post", "/api/bookings", b'{"tour_id": "7", "quantity": 1}', "tour_id must be a whole number"),
        ("post", "/api/bookings", b'{"tour_id": 7, "quantity": 0}', "quantity must be between 1 and 1000"),
        ("post", "/api/tours", b'{"name": "", "quota": 1, "price": "1", "starts_at": "2030-01-01T00:00:00Z"}',
         "name must be a non-empty string"),
        ("post", "/api/sync-runs", b"[1]", "the body must be a JSON object"),
        ("get", "/api/sync-runs/1/failures?limit=0", None, "limit must be between 1 and 1000"),
        ("get", "/api/jobs/failed?limit=x", None, "limit must be a whole number"),
        ("get", "/api/jobs/failed?queue=nope", None, "queue must be one of sync-pembayaran, emails, booking-expiry"),
        ("delete", "/api/jobs/failed?older_than=soon", None,
         "older_than: 'soon' is not an age such as 7d, 12h, 30m or 90s"),
        ("post", "/api/payments/notification", b'{"order_id": 1}', "order_id is required and must be a string"),
    ],
)
def test_bad_input_is_a_clear_400_before_anything_is_touched(client, method, path, body, message):
    response = client.open(path, method=method.upper(), data=body, headers=AUTH,
                           content_type="application/json" if body is not None else None)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"].startswith(message), response.get_json()


def test_what_no_route_answers_is_json_too(client):
    assert client.get("/api/nope", headers=AUTH).get_json() == {"error": "not found"}
    assert client.put("/api/bookings", headers=AUTH).status_code == 405
    too_big = client.post("/api/bookings", headers=AUTH, data=b"x" * (65 * 1024), content_type="application/json")
    assert too_big.status_code == 413


def test_a_database_that_cannot_be_reached_is_a_503(client):
    response = client.get("/api/bookings/1", headers=AUTH)
    assert response.status_code == 503 and "unavailable" in response.get_json()["error"]

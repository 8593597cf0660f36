"""The OpenAPI document describes every route from the same models that check requests; what fuzzing found stays fixed.

Fast tier: the application in process, pointed at a database and a broker that do not exist (a route that
reached either would answer 503).
"""

from __future__ import annotations

import json
import re

import pytest

from tests.sync_api.web.conftest import AUTH

pytestmark = pytest.mark.fast

#: Routes outside the document: its own two, the login form's, the script-driven admin pages and Flask's static files.
UNDOCUMENTED = {"/api/openapi.json", "/api/docs", "/admin/login", "/admin/logout", "/admin/jobs", "/admin/bookings",
                "/static/<path:filename>"}


def test_every_route_is_in_the_document_with_its_auth_and_error_shape(app, client):
    document = client.get("/api/openapi.json").get_json()  # no token: integrators generate clients from it

    assert document["openapi"] == "3.1.0"
    assert set(document["components"]["securitySchemes"]) == {"bearerToken", "adminSession"}
    documented = {(method.upper(), path) for path, operations in document["paths"].items() for method in operations}
    for rule in app.url_map.iter_rules():
        if rule.rule in UNDOCUMENTED:
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (method, path) in documented, (method, path)
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            public = operation.get("security") == []
            assert public == (path in ("/healthz", "/readyz", "/metrics", "/api/payments/notification")), path
            assert "503" in operation["responses"], (method, path)
            if not public:
                assert "401" in operation["responses"], (method, path)
            for status, answer in operation["responses"].items():
                if status.startswith("4"):
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)


def test_the_document_states_the_bounds_the_checks_apply(client):
    schemas = client.get("/api/openapi.json").get_json()["components"]["schemas"]

    booking = schemas["NewBooking"]
    assert booking["required"] == ["tour_id", "quantity", "customer_name", "customer_email"]
    assert booking["properties"]["quantity"].items() >= {"type": "integer", "minimum": 1, "maximum": 1000}.items()
    assert booking["properties"]["customer_name"]["maxLength"] == 200
    assert booking["properties"]["customer_email"]["format"] == "email"
    assert schemas["FailedJobsQuery"]["properties"]["limit"]["maximum"] == 1000


def test_an_integrator_learns_of_the_idempotency_key_from_the_document(client):
    operation = client.get("/api/openapi.json").get_json()["paths"]["/api/bookings"]["post"]
    (header,) = [p for p in operation["parameters"] if p["in"] == "header"]
    assert header["name"] == "Idempotency-Key" and header["required"] is False
    assert header["schema"]["maxLength"] == 200 and "422" in operation["responses"]


def test_ids_in_paths_are_64_bit_and_positive(client):
    document = client.get("/api/openapi.json").get_json()
    parameter = document["paths"]["/api/bookings/{booking_id}"]["get"]["parameters"][0]
    assert parameter["schema"] == {"type": "integer", "format": "int64", "minimum": 1, "maximum": 2**63 - 1}
    assert client.get(f"/api/bookings/{2**63}", headers=AUTH).status_code == 404


def test_a_wrong_method_names_the_allowed_ones(client):
    # Found by schemathesis: a 405 without the Allow header RFC 9110 requires
    response = client.open("/api/tours", method="TRACE", headers=AUTH)
    assert response.status_code == 405 and response.get_json() == {"error": "method not allowed"}
    assert set(response.headers["Allow"].split(", ")) >= {"POST"}


@pytest.mark.parametrize("content_type", ["multipart/form-data", "application/x-www-form-urlencoded", None])
def test_a_body_is_read_as_json_whatever_its_content_type(client, content_type):
    # Found by schemathesis: multipart/form-data without a boundary answered 500; the models never saw the body
    body = json.dumps({"tour_id": "x", "quantity": 1, "customer_name": "Sari", "customer_email": "s@example.com"})
    headers = {**AUTH, **({"Content-Type": content_type} if content_type else {})}
    response = client.post("/api/bookings", data=body, headers=headers)
    assert response.status_code == 400 and response.get_json() == {"error": "tour_id must be a whole number"}


def test_a_body_nested_deeper_than_the_parser_goes_is_a_400(client):
    for path in ("/api/sync-runs", "/api/bookings", "/api/jobs/failed/retry-all", "/api/payments/notification"):
        response = client.post(path, data="[" * 20_000 + "]" * 20_000, headers=AUTH)  # within the 64 KiB limit
        assert response.status_code == 400 and response.get_json() == {"error": "malformed JSON body"}, path


def test_a_whole_number_may_be_written_as_json_schema_allows(client):
    # Found by schemathesis: JSON Schema's integer includes 7.0; the document says integer, so 7.0 is 7
    body = {"tour_id": 1.0, "quantity": 1.5, "customer_name": "Sari", "customer_email": "s@example.com"}
    response = client.post("/api/bookings", json=body, headers=AUTH)
    assert response.get_json() == {"error": "quantity must be a whole number"}


def test_a_null_queue_in_the_body_is_no_choice(client):
    # Found by schemathesis: {"queue": null} beside ?queue= was "given twice, differently"
    response = client.post("/api/jobs/failed/retry-all?queue=emails", json={"queue": None}, headers=AUTH)
    assert response.status_code == 503  # past validation, at the (absent) database


def test_the_reference_page_lists_every_operation(client):
    page = client.get("/api/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    for route in ("POST /api/bookings", "GET /api/sync-runs/{run_id}", "DELETE /api/jobs/failed", "GET /healthz"):
        assert f"<code>{route}</code>" in html, route

"""sync-api's routes against the real PostgreSQL and RabbitMQ: the token, bad input, one run at a time."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
from sqlalchemy import text

from antrian.cli.demo import seed_students
from sync_api import create_app
from tests.support import API_TOKEN, queue_depth, settings_for_tests

SETTINGS = settings_for_tests(api_token=API_TOKEN)


def close(app) -> None:
    """Close what the app opened, so no connection is left to the garbage collector."""
    state = app.extensions["antrian"]
    if "broker" in state:
        state["broker"].close()
    if "engine" in state:
        state["engine"].dispose()


@pytest.fixture
def client(clean):
    app = create_app(SETTINGS)
    yield app.test_client()
    close(app)


def run_count(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM sync_runs")).scalar_one()


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": API_TOKEN}])
@pytest.mark.parametrize(
    ("method", "path"),
    [("post", "/api/sync-runs"), ("get", "/api/sync-runs/1"), ("get", "/api/sync-runs/1/failures"),
     ("get", "/admin/sync-pembayaran/progress"), ("post", "/admin/sync-pembayaran/start")],
)
def test_missing_or_wrong_token_is_401_and_changes_nothing(client, clean, headers, method, path):
    response = getattr(client, method)(path, headers=headers)
    assert response.status_code == 401
    assert response.get_json() == {"error": "missing or wrong API token"}
    assert run_count(clean) == 0


def test_unknown_run_is_404(client, auth):
    for path in ("/api/sync-runs/999", "/api/sync-runs/999/failures"):
        response = client.get(path, headers=auth)
        assert response.status_code == 404
        assert response.get_json() == {"error": "sync run 999 not found"}


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"text"'])
def test_malformed_body_is_400_and_starts_nothing(client, clean, auth, body):
    response = client.post("/api/sync-runs", data=body, headers=auth, content_type="application/json")
    assert response.status_code == 400
    assert "error" in response.get_json()
    assert run_count(clean) == 0


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=ten", "offset=-1"])
def test_bad_page_is_400(client, auth, query):
    response = client.get(f"/api/sync-runs/1/failures?{query}", headers=auth)
    assert response.status_code == 400
    assert ("limit" in response.get_json()["error"]) or ("offset" in response.get_json()["error"])


def test_a_run_starts_and_a_second_is_refused(client, clean, auth):
    # Given students
    seed_students(clean, 25)
    # When a run starts
    first = client.post("/api/sync-runs", headers=auth)
    # Then it is recorded and its fan-out is on the queue, confirmed
    assert first.status_code == 202
    body = first.get_json()
    assert body == {"id": body["id"], "total": 25, "status": "running"}
    assert queue_depth("sync-pembayaran") == 1
    # And a second run is refused while it runs, naming the running one
    second = client.post("/api/sync-runs", headers=auth, json={})
    assert second.status_code == 409
    assert second.get_json() == {"error": f"sync run {body['id']} is still running", "id": body["id"]}
    run = client.get(f"/api/sync-runs/{body['id']}", headers=auth).get_json()
    assert set(run) == {"id", "status", "total", "processed", "failed", "successCount", "percent", "isRunning",
                        "started_at", "finished_at"}
    assert (run["isRunning"], run["processed"], run["percent"]) == (True, 0, 0.0)
    assert client.get("/admin/sync-pembayaran/progress", headers=auth).get_json() == {
        "id": body["id"], "total": 25, "processed": 0, "failed": 0, "percent": 0.0, "isRunning": True,
        "successCount": 0,
    }


def test_concurrent_starts_make_exactly_one_run(clean, auth):
    seed_students(clean, 10)
    app = create_app(SETTINGS)

    def start(_):
        return app.test_client().post("/api/sync-runs", headers=auth).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(start, range(8)))
    close(app)
    assert codes == [202] + [409] * 7
    assert run_count(clean) == 1


def test_health_and_readiness(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ok", "database": "ok", "broker": "ok"}


@pytest.mark.parametrize(
    ("override", "down"),
    [({"database_url": "postgresql+psycopg://postgres@127.0.0.1:1/x"}, "database"),
     ({"broker_url": "amqp://guest:guest@127.0.0.1:1/"}, "broker")],
)
def test_readiness_says_which_dependency_is_down(infrastructure, override, down):
    app = create_app(replace(SETTINGS, **override))
    client = app.test_client()
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body == {"status": "unavailable", "database": "ok", "broker": "ok", down: "unreachable",
                    "error": f"{down} unreachable"}
    assert "127.0.0.1" not in response.get_data(as_text=True)  # where and why go to the log only
    assert client.get("/healthz").status_code == 200
    close(app)


def test_admin_page_asks_for_the_token(client):
    response = client.get("/admin/sync-pembayaran")
    assert response.status_code == 302
    assert "/admin/login" in response.headers["Location"]
    wrong = client.post("/admin/login", data={"token": "nope"})
    assert wrong.status_code == 401
    right = client.post("/admin/login", data={"token": API_TOKEN, "next": "/admin/sync-pembayaran"})
    assert right.status_code == 302
    cookie = right.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert client.get("/admin/sync-pembayaran").status_code == 200
    assert client.get("/admin/sync-pembayaran/progress").status_code == 200


def test_a_start_while_the_broker_is_down_is_503_and_records_no_run(clean, auth):
    # Given a database that works and a broker that cannot be reached
    seed_students(clean, 5)
    app = create_app(replace(SETTINGS, broker_url="amqp://guest:guest@127.0.0.1:1/"))
    # When a run is asked for
    response = app.test_client().post("/api/sync-runs", headers=auth)
    # Then the answer says so and no run is left behind blocking the next one
    assert response.status_code == 503
    assert "broker" in response.get_json()["error"]
    assert run_count(clean) == 0
    close(app)


def test_a_read_while_the_database_is_down_is_503(infrastructure, auth):
    app = create_app(replace(SETTINGS, database_url="postgresql+psycopg://postgres@127.0.0.1:1/x"))
    response = app.test_client().get("/api/sync-runs/1", headers=auth)
    assert response.status_code == 503
    assert "database" in response.get_json()["error"]
    close(app)


def test_a_session_post_needs_the_script_header(client, clean):
    # Given a signed-in admin session (a cookie a cross-site form could ride on)
    seed_students(clean, 1)
    client.post("/admin/login", data={"token": API_TOKEN})
    # When the start is posted without the header the page's script sends
    forged = client.post("/admin/sync-pembayaran/start")
    # Then it is refused and nothing starts; with the header it works
    assert forged.status_code == 403
    assert run_count(clean) == 0
    assert client.post("/admin/sync-pembayaran/start", headers={"X-Requested-With": "fetch"}).status_code == 202

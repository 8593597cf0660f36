"""sync-api's access log: one JSON line per request, its facts as fields (sync_api.access_log)."""

from __future__ import annotations

import requests

from tests.support import log_events, wait_until


def test_each_request_is_one_json_access_line_with_its_fields(clean, start_web, services):
    web = start_web()
    requests.get(f"{web}/healthz?probe=1", timeout=10)
    requests.post(f"{web}/api/bookings", json={}, timeout=10)  # no token: 401

    def lines() -> list[dict]:
        return [e for e in log_events(services[-1].log()) if e.get("logger") == "gunicorn.access"]

    def by_path() -> dict[str, dict]:
        return {line["path"]: line for line in lines()}

    # start_web's own readiness probes (GET /healthz) are access lines too: wait for the two paths themselves
    found = wait_until(lambda: {"/healthz?probe=1", "/api/bookings"} <= (seen := by_path()).keys() and seen,
                       timeout=10, what="both requests' access lines")
    health, booking = found["/healthz?probe=1"], found["/api/bookings"]
    assert (health["method"], health["status"], health["message"]) == ("GET", 200, "GET /healthz?probe=1 200")
    assert (booking["method"], booking["status"], booking["remote_addr"]) == ("POST", 401, "127.0.0.1")
    assert booking["bytes"] > 0 and booking["duration_ms"] >= 0

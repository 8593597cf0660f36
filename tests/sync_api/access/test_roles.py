"""Each role against every route of a running sync-api: allowed, or 403; no token is 401. The table below must
name every route the application has, so a new route fails here until someone decides who may call it."""

from __future__ import annotations

import re

import pytest
import requests

from antrian.config import load_settings
from sync_api import create_app
from tests.support import API_TOKEN
from tests.sync_api.access.helpers import bearer, create_token

#: (method, rule) → the least role that may call it; "public" needs none.
ROLES = {
    ("GET", "/healthz"): "public",
    ("GET", "/readyz"): "public",
    ("GET", "/api/openapi.json"): "public",
    ("GET", "/api/docs"): "public",
    ("POST", "/api/payments/notification"): "public",  # signed by the gateway, not by an operator
    ("GET", "/admin/login"): "public",
    ("POST", "/admin/login"): "public",
    ("POST", "/admin/logout"): "public",
    ("GET", "/admin/sync-pembayaran"): "viewer",
    ("GET", "/admin/jobs"): "viewer",
    ("GET", "/admin/bookings"): "viewer",
    ("GET", "/admin/sync-pembayaran/progress"): "viewer",
    ("GET", "/admin/sync-pembayaran/failures"): "viewer",
    ("POST", "/admin/sync-pembayaran/start"): "operator",
    ("GET", "/api/sync-runs"): "viewer",
    ("POST", "/api/sync-runs"): "operator",
    ("GET", "/api/sync-runs/<int(max=9223372036854775807):run_id>"): "viewer",
    ("GET", "/api/sync-runs/<int(max=9223372036854775807):run_id>/failures"): "viewer",
    ("POST", "/api/sync-runs/<int(max=9223372036854775807):run_id>/cancel"): "operator",
    ("POST", "/api/sync-runs/<int(max=9223372036854775807):run_id>/resume"): "operator",
    ("POST", "/api/tours"): "operator",
    ("POST", "/api/bookings"): "operator",
    ("GET", "/api/bookings"): "viewer",
    ("GET", "/api/bookings/<int(max=9223372036854775807):booking_id>"): "viewer",
    ("POST", "/api/bookings/<int(max=9223372036854775807):booking_id>/emails/"
             "<any(invoice, eticket, cancellation):kind>/resend"): "operator",
    ("POST", "/api/payments/simulate"): "operator",
    ("GET", "/api/jobs/failed"): "viewer",
    ("DELETE", "/api/jobs/failed"): "operator",
    ("GET", "/api/jobs/failed/<int(min=1, max=9223372036854775807):job_id>"): "viewer",
    ("DELETE", "/api/jobs/failed/<int:job_id>"): "operator",
    ("POST", "/api/jobs/failed/<int(min=1, max=9223372036854775807):job_id>/retry"): "operator",
    ("POST", "/api/jobs/failed/retry-all"): "operator",
    ("GET", "/api/queues"): "viewer",
    ("POST", "/api/queues/<name>/pause"): "operator",
    ("POST", "/api/queues/<name>/resume"): "operator",
    ("GET", "/api/audit"): "viewer",
    ("GET", "/api/tokens"): "admin",
    ("POST", "/api/tokens"): "admin",
    ("DELETE", "/api/tokens/<name>"): "admin",
}
RANKS = {"viewer": 0, "operator": 1, "admin": 2}


def routes() -> list[tuple[str, str]]:
    """Every (method, rule) the application serves (but Flask's static files)."""
    app = create_app(load_settings({"API_TOKEN": API_TOKEN}))
    return sorted(
        (method, rule.rule) for rule in app.url_map.iter_rules() if rule.endpoint != "static"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    )


def concrete(rule: str) -> str:
    """A path for ``rule``: ids 999999 (none exists), an ``any()`` its first choice, a queue name ``nope``."""
    path = re.sub(r"<any\(\s*([^,)\s]+)[^>]*>", r"\1", rule)
    path = re.sub(r"<int[^>]*>", "999999", path)
    return re.sub(r"<[^>]+>", "nope", path)


def test_the_table_names_every_route_the_application_serves():
    assert sorted(ROLES) == routes()


@pytest.fixture
def operators(clean):
    return {role: create_token(f"a-{role}", role) for role in RANKS}


def test_each_role_is_allowed_exactly_its_routes_and_refused_the_others_with_403(start_web, operators):
    web = start_web(PAYMENT_SIMULATOR="true")
    checked = 0
    for (method, rule), needed in ROLES.items():
        if needed == "public":
            continue
        url = f"{web}{concrete(rule)}"
        # Without a token: 401 for the API, the login form for a page
        anonymous = requests.request(method, url, timeout=10, allow_redirects=False)
        assert anonymous.status_code in (401, 302), (method, rule, anonymous.status_code)
        for role, secret in operators.items():
            # A body the route will refuse (or a record that does not exist) if the role gets through: nothing
            # changes, but the answer shows whether the role was let in.
            answer = requests.request(method, url, headers=bearer(secret), json={"unexpected": True}, timeout=10,
                                      allow_redirects=False)
            if RANKS[role] >= RANKS[needed]:
                assert answer.status_code not in (401, 403), (role, method, rule, answer.status_code, answer.text)
            else:
                assert answer.status_code == 403, (role, method, rule, answer.status_code, answer.text)
                assert answer.json()["error"] == f"this needs the {needed} role; a-{role} has the {role} role"
            checked += 1
    assert checked == 3 * sum(1 for needed in ROLES.values() if needed != "public")


def test_the_bootstrap_token_is_an_admin_and_a_wrong_or_revoked_token_is_401(start_web, operators, clean):
    web = start_web()
    assert requests.get(f"{web}/api/tokens", headers=bearer(API_TOKEN), timeout=10).status_code == 200
    wrong = requests.get(f"{web}/api/queues", headers=bearer(operators["viewer"] + "x"), timeout=10)
    assert (wrong.status_code, wrong.json()) == (401, {"error": "missing or wrong API token"})

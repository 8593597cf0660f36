"""Admin sessions end when they should: a copied cookie dies with its logout, a revoked token's sessions die at
once, failed sign-ins are throttled per address and logged, and every page carries its security headers."""

from __future__ import annotations

import re
import time

import requests
from playwright.sync_api import Page, expect
from sqlalchemy import text

from tests.support import API_TOKEN, wait_until
from tests.sync_api.access.helpers import antrian, create_token


def sign_in(page: Page, web: str, secret: str) -> str:
    """Sign in on the jobs page with ``secret``; return the session cookie's value."""
    page.goto(f"{web}/admin/jobs")
    expect(page).to_have_url(re.compile(r"/admin/login"))
    page.fill("#token", secret)
    page.click("#login")
    expect(page).to_have_url(f"{web}/admin/jobs")
    return next(c["value"] for c in page.context.cookies() if c["name"] == "antrian_session")


def with_cookie(web: str, value: str) -> int:
    """What ``GET /api/queues`` answers to someone else holding a copy of the cookie."""
    return requests.get(f"{web}/api/queues", cookies={"antrian_session": value}, timeout=10).status_code


def test_a_copied_session_cookie_stops_working_at_logout(start_web, page: Page, clean):
    web = start_web()
    alice = create_token("alice", "operator")
    # Given alice signed in, and a copy of her cookie elsewhere that works
    copied = sign_in(page, web, alice)
    assert with_cookie(web, copied) == 200

    # When she signs out
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/admin/login"))

    # Then the copy no longer opens anything, and the audit trail has her sign-in and sign-out
    assert with_cookie(web, copied) == 401
    assert requests.get(f"{web}/admin/jobs", cookies={"antrian_session": copied}, timeout=10,
                        allow_redirects=False).status_code == 302
    events = requests.get(f"{web}/api/audit", headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=10).json()
    assert [(e["operator"], e["action"]) for e in events["items"][:2]] == [("alice", "logout"), ("alice", "login")]


def test_revoking_a_token_ends_its_open_sessions_at_once(start_web, page: Page, clean):
    web = start_web()
    bob = create_token("bob", "viewer")
    # Given bob's page open, and a copy of his cookie
    copied = sign_in(page, web, bob)
    expect(page.locator('#queue-rows tr[data-queue="emails"]')).to_be_visible()

    # When an admin revokes bob's token
    assert antrian("tokens", "revoke", "bob").returncode == 0

    # Then the copy is refused at once, and his page, on its next call, finds itself signed out
    assert with_cookie(web, copied) == 401
    page.reload()
    expect(page).to_have_url(re.compile(r"/admin/login"))


def test_a_viewer_session_sees_the_pages_but_cannot_pause(start_web, page: Page, clean):
    web = start_web()
    sign_in(page, web, create_token("vera", "viewer"))
    answer = page.evaluate(
        """async () => {
             const r = await fetch("/api/queues/emails/pause", {method: "POST",
                                   headers: {"X-Requested-With": "fetch"}});
             return [r.status, (await r.json()).error];
           }"""
    )
    assert answer == [403, "this needs the operator role; vera has the viewer role"]


def test_failed_sign_ins_are_throttled_per_address_logged_and_the_right_token_works_after_the_window(
    start_web, services, clean
):
    web = start_web(ANTRIAN_LOGIN_WINDOW_S="8")
    # When one address sends 30 wrong tokens to the login form
    statuses, waits = [], []
    for attempt in range(30):
        answer = requests.post(f"{web}/admin/login", data={"token": f"wrong-token-{attempt:02d}-xxxxxxxxxxxx"},
                               timeout=10, allow_redirects=False)
        statuses.append(answer.status_code)
        if answer.status_code == 429:
            waits.append(int(answer.headers["Retry-After"]))

    # Then the first 10 are told the token is wrong, the rest are throttled with how long to wait
    assert statuses == [401] * 10 + [429] * 20
    assert waits and all(1 <= wait <= 8 for wait in waits)
    # And even the right token is refused from that address until the window ends
    started = time.monotonic()
    right = requests.post(f"{web}/admin/login", data={"token": API_TOKEN}, timeout=10, allow_redirects=False)
    assert right.status_code == 429 and "Too many failed sign-ins" in right.text
    # And each failure is logged with the address
    log = services[-1].log
    wait_until(lambda: log().count("failed admin sign-in from 127.0.0.1") == 10
               and log().count("admin sign-in from 127.0.0.1 refused unchecked: throttled") == 21, timeout=10,
               what="the failed and the throttled sign-ins in the log")

    # When the window is over, the right token signs in
    def signed_in() -> bool:
        answer = requests.post(f"{web}/admin/login", data={"token": API_TOKEN}, timeout=10, allow_redirects=False)
        return answer.status_code == 302 and "antrian_session" in answer.cookies

    wait_until(signed_in, timeout=20, interval=0.5, what="a sign-in after the window")
    assert time.monotonic() - started < 20


def test_every_page_has_a_nonce_csp_no_framing_and_hsts_with_secure_cookies(start_web, clean):
    plain = start_web()
    page = requests.get(f"{plain}/admin/login", timeout=10)
    policy = page.headers["Content-Security-Policy"]
    nonce = re.search(r"script-src 'nonce-([^']+)'", policy)[1]
    assert f'<style nonce="{nonce}">' in page.text and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["Referrer-Policy"] == "no-referrer"
    assert "Strict-Transport-Security" not in page.headers  # plain http (make run, these tests)
    again = requests.get(f"{plain}/admin/login", timeout=10).headers["Content-Security-Policy"]
    assert again != policy, "a new nonce for every page"
    # A HEAD of the form is no sign-in: nothing counted
    assert requests.head(f"{plain}/admin/login", timeout=10).status_code == 200
    with clean.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM login_failures")).scalar_one() == 0
    api = requests.get(f"{plain}/api/queues", timeout=10)
    assert api.headers["Content-Security-Policy"].startswith("default-src 'none'")

    # Behind HTTPS (SPEC's default): HSTS, and the session cookie is Secure, HttpOnly and SameSite=Strict
    secure = start_web(SESSION_COOKIE_SECURE="true")
    assert requests.get(f"{secure}/healthz", timeout=10).headers["Strict-Transport-Security"].startswith("max-age=")
    signed_in = requests.post(f"{secure}/admin/login", data={"token": API_TOKEN}, timeout=10, allow_redirects=False)
    cookie = signed_in.headers["Set-Cookie"]
    assert cookie.startswith("antrian_session=") and "Secure" in cookie and "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie

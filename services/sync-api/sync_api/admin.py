"""``/admin/``: token login, the student payment sync page with its live progress, the jobs page, the bookings page."""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify, make_response, redirect, render_template, request, url_for

from antrian.jobs import queue_stats
from antrian.sync import runs as sync_runs
from sync_api.sync.api import start_run_response
from sync_api.sync.schemas import Progress, RunFailures, RunStarted
from sync_api.web import auth, sessions, throttle
from sync_api.web.extensions import get_engine
from sync_api.web.openapi import TOKEN_OR_SESSION, documented
from sync_api.web.schemas import PageQuery

bp = Blueprint("admin", __name__, url_prefix="/admin")
logger = logging.getLogger(__name__)

#: What ``/admin/sync-pembayaran/progress`` answers before any run (the old admin page's shape).
_NO_RUN = {"total": 0, "processed": 0, "failed": 0, "percent": 0.0, "isRunning": False, "successCount": 0}


def _safe_next(target: str | None) -> str:
    return target if target and target.startswith("/admin/") and not target.startswith("//") else url_for(
        "admin.sync_page"
    )


@bp.route("/login", methods=["GET", "POST"])
def login():
    """The sign-in form: a token (an operator's own, or ``API_TOKEN``) opens a session kept in PostgreSQL."""
    next_url = _safe_next(request.values.get("next"))
    if request.method != "POST":  # GET, or HEAD: the form, never a sign-in
        return render_template("login.html", next=next_url, error=None)
    candidate = (request.form.get("token") or "").strip()
    settings = current_app.config["ANTRIAN"]
    # A throttled address or token is refused before its token is even looked at, the right one included.
    wait = throttle.retry_after(get_engine(), throttle.keys(auth.client_address(), candidate),
                                window_s=settings.antrian_login_window_s)
    operator = None if wait else (auth.check_token(candidate) if candidate else None)
    if operator is None:
        if not wait:
            auth.refused_sign_in(candidate)
        message = f"Too many failed sign-ins: try again in {wait} s." if wait else "That token is not right."
        response = make_response(render_template("login.html", next=next_url, error=message), 429 if wait else 401)
        if wait:
            response.headers["Retry-After"] = str(wait)
            logger.warning("admin sign-in from %s refused unchecked: throttled for %s s more", auth.client_address(),
                           wait, extra={"event": "sign_in_throttled", "address": auth.client_address()})
        return response
    session_id = sessions.open_session(get_engine(), operator, address=auth.client_address())
    response = make_response(redirect(next_url))
    response.set_cookie(sessions.COOKIE, session_id, max_age=int(sessions.LIFETIME.total_seconds()), path="/",
                        secure=settings.session_cookie_secure, httponly=True, samesite="Strict")
    return response


@bp.post("/logout")
def logout():
    """End the session here and everywhere its cookie was copied to."""
    if session_id := request.cookies.get(sessions.COOKIE):
        sessions.end(get_engine(), session_id)
    response = make_response(redirect(url_for("admin.login")))
    response.delete_cookie(sessions.COOKIE, path="/", secure=current_app.config["ANTRIAN"].session_cookie_secure,
                           httponly=True, samesite="Strict")
    return response


@bp.get("/sync-pembayaran")
@documented(tags=("admin",), security=TOKEN_OR_SESSION, ok={"HTTP_200": None, "HTTP_302": None})
def sync_page():
    """The HTML page that starts a run and shows its progress live (a redirect to the login form without a session)."""
    if not auth.is_authenticated():
        return redirect(url_for("admin.login", next=request.path))
    return render_template("sync_pembayaran.html")


@bp.get("/jobs")
def jobs_page():
    """Queues and failed jobs, live; its scripts call ``/api/queues`` and ``/api/jobs/failed`` with the session."""
    if not auth.is_authenticated():
        return redirect(url_for("admin.login", next=request.path))
    return render_template("jobs.html", queues=queue_stats.SPEC_QUEUES)


@bp.get("/bookings")
def bookings_page():
    """A booking found by its code, with its emails and a Resend button for each kind; its scripts call
    ``/api/bookings`` with the session."""
    if not auth.is_authenticated():
        return redirect(url_for("admin.login", next=request.path))
    return render_template("bookings.html")


@bp.get("/sync-pembayaran/progress")
@auth.requires("viewer")
@documented(tags=("admin",), security=TOKEN_OR_SESSION, ok={"HTTP_200": Progress})
def progress():
    """The latest run, in the shape the old admin page polls."""
    run = sync_runs.latest_run(get_engine())
    if run is None:
        return jsonify(_NO_RUN)
    return jsonify({key: run[key] for key in ("id", *_NO_RUN)})


@bp.post("/sync-pembayaran/start")
@auth.requires("operator")
@documented(tags=("admin",), security=TOKEN_OR_SESSION, ok={"HTTP_202": RunStarted}, errors=(403, 409))
def start():
    """Start a run, as ``POST /api/sync-runs`` (with a session: only with the ``X-Requested-With`` header)."""
    return start_run_response()


@bp.get("/sync-pembayaran/failures")
@auth.requires("viewer")
@documented(tags=("admin",), security=TOKEN_OR_SESSION, query=PageQuery, ok={"HTTP_200": RunFailures},
            errors=(400,))
def failures(query: PageQuery):
    """The latest run's failed students."""
    run = sync_runs.latest_run(get_engine())
    if run is None:
        return jsonify({"items": [], "total": 0})
    items, total = sync_runs.list_failures(get_engine(), run["id"], limit=query.limit, offset=query.offset)
    return jsonify({"items": items, "total": total, "run_id": run["id"]})

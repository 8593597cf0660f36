"""``/admin/``: token login, the student payment sync page with its live progress, the jobs page, the bookings page."""

from __future__ import annotations

from flask import Blueprint, jsonify, redirect, render_template, request, session, url_for

from antrian.jobs import queue_stats
from antrian.sync import runs as sync_runs
from sync_api.sync.api import start_run_response
from sync_api.sync.schemas import Progress, RunFailures, RunStarted
from sync_api.web import auth
from sync_api.web.extensions import get_engine
from sync_api.web.openapi import TOKEN_OR_SESSION, documented
from sync_api.web.schemas import PageQuery

bp = Blueprint("admin", __name__, url_prefix="/admin")

#: What ``/admin/sync-pembayaran/progress`` answers before any run (the old admin page's shape).
_NO_RUN = {"total": 0, "processed": 0, "failed": 0, "percent": 0.0, "isRunning": False, "successCount": 0}


def _safe_next(target: str | None) -> str:
    return target if target and target.startswith("/admin/") and not target.startswith("//") else url_for(
        "admin.sync_page"
    )


@bp.route("/login", methods=["GET", "POST"])
def login():
    next_url = _safe_next(request.values.get("next"))
    if request.method == "POST":
        if auth.token_is_valid(request.form.get("token")):
            session.clear()
            session.permanent = True  # expires after PERMANENT_SESSION_LIFETIME
            session["admin"] = True
            return redirect(next_url)
        return render_template("login.html", next=next_url, error="That token is not right."), 401
    return render_template("login.html", next=next_url, error=None)


@bp.post("/logout")
def logout():
    session.clear()
    return redirect(url_for("admin.login"))


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
@auth.login_required_json
@documented(tags=("admin",), security=TOKEN_OR_SESSION, ok={"HTTP_200": Progress})
def progress():
    """The latest run, in the shape the old admin page polls."""
    run = sync_runs.latest_run(get_engine())
    if run is None:
        return jsonify(_NO_RUN)
    return jsonify({key: run[key] for key in ("id", *_NO_RUN)})


@bp.post("/sync-pembayaran/start")
@auth.login_required_json
@documented(tags=("admin",), security=TOKEN_OR_SESSION, ok={"HTTP_202": RunStarted}, errors=(403, 409))
def start():
    """Start a run, as ``POST /api/sync-runs`` (with a session: only with the ``X-Requested-With`` header)."""
    return start_run_response()


@bp.get("/sync-pembayaran/failures")
@auth.login_required_json
@documented(tags=("admin",), security=TOKEN_OR_SESSION, query=PageQuery, ok={"HTTP_200": RunFailures},
            errors=(400,))
def failures(query: PageQuery):
    """The latest run's failed students."""
    run = sync_runs.latest_run(get_engine())
    if run is None:
        return jsonify({"items": [], "total": 0})
    items, total = sync_runs.list_failures(get_engine(), run["id"], limit=query.limit, offset=query.offset)
    return jsonify({"items": items, "total": total, "run_id": run["id"]})

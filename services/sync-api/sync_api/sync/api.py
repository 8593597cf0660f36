"""``/api/sync-runs``: start a student payment sync run and follow it."""

from __future__ import annotations

from flask import Blueprint, jsonify

from antrian.sync import runs as sync_runs
from antrian.sync.runs import SyncRunNotFound
from sync_api.sync.schemas import RunFailures, RunResumed, RunStarted, StartRun, SyncRun, SyncRuns
from sync_api.web import auth
from sync_api.web.extensions import get_broker, get_engine
from sync_api.web.openapi import documented
from sync_api.web.schemas import PageQuery
from sync_api.web.validation import MAX_ID

bp = Blueprint("sync_runs", __name__, url_prefix="/api/sync-runs")
bp.before_request(auth.require_by_method)


def start_run_response():
    """202 with the new run, or 409 naming the run still going (shared with the admin page)."""
    run = sync_runs.start_run(get_engine(), get_broker(), by=auth.actor())
    return jsonify({"id": run["id"], "total": run["total"], "status": run["status"]}), 202


@bp.post("")
@documented(tags=("sync",), body=StartRun, body_optional=True, ok={"HTTP_202": RunStarted}, errors=(400, 409))
def start():
    """Start a run: one job per student on queue ``sync-pembayaran``; 409 with the running run's ``id``."""
    return start_run_response()


@bp.get("")
@documented(tags=("sync",), query=PageQuery, ok={"HTTP_200": SyncRuns}, errors=(400,))
def list_runs(query: PageQuery):
    """Every run with its counts, newest first."""
    items, total = sync_runs.list_runs(get_engine(), limit=query.limit, offset=query.offset)
    return jsonify({"items": items, "total": total})


@bp.get(f"/<int(max={MAX_ID}):run_id>")
@documented(tags=("sync",), ok={"HTTP_200": SyncRun}, errors=(404,))
def show(run_id: int):
    """One run with its counts."""
    run = sync_runs.get_run(get_engine(), run_id)
    if run is None:
        raise SyncRunNotFound(run_id)
    return jsonify(run)


@bp.get(f"/<int(max={MAX_ID}):run_id>/failures")
@documented(tags=("sync",), query=PageQuery, ok={"HTTP_200": RunFailures}, errors=(400, 404))
def failures(run_id: int, query: PageQuery):
    """The run's failed students with the last error of each."""
    if sync_runs.get_run(get_engine(), run_id) is None:
        raise SyncRunNotFound(run_id)
    items, total = sync_runs.list_failures(get_engine(), run_id, limit=query.limit, offset=query.offset)
    return jsonify({"items": items, "total": total})


@bp.post(f"/<int(max={MAX_ID}):run_id>/cancel")
@documented(tags=("sync",), ok={"HTTP_200": SyncRun}, errors=(404, 409))
def cancel(run_id: int):
    """End a running run as ``cancelled``: its queued jobs end without calling the school API, its counts keep
    the students that reached an outcome, and a new run may start at once; 409 when it is not running."""
    return jsonify(sync_runs.cancel_run(get_engine(), run_id, by=auth.actor()))


@bp.post(f"/<int(max={MAX_ID}):run_id>/resume")
@documented(tags=("sync",), ok={"HTTP_202": RunResumed}, errors=(404, 409))
def resume(run_id: int):
    """Send again the jobs of the students still pending in a running run that stalled (with publisher confirms);
    409 when it is not running."""
    return jsonify(sync_runs.resume_run(get_engine(), get_broker(), run_id, by=auth.actor())), 202

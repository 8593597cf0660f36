"""``/api/sync-runs``: start a student payment sync run and follow it."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from antrian.errors import InvalidInput
from antrian.sync import runs as sync_runs
from antrian.sync.runs import SyncRunNotFound
from sync_api.web import auth
from sync_api.web.extensions import get_broker, get_engine
from sync_api.web.pagination import page

bp = Blueprint("sync_runs", __name__, url_prefix="/api/sync-runs")
bp.before_request(auth.require_token)


def start_run_response():
    """202 with the new run, or 409 naming the run still going (shared with the admin page)."""
    run = sync_runs.start_run(get_engine(), get_broker())
    return jsonify({"id": run["id"], "total": run["total"], "status": run["status"]}), 202


@bp.post("")
def start():
    if request.get_data():
        body = request.get_json(force=True)  # malformed JSON -> 400
        if not isinstance(body, dict):
            raise InvalidInput("the body must be a JSON object")
    return start_run_response()


@bp.get("/<int:run_id>")
def show(run_id: int):
    run = sync_runs.get_run(get_engine(), run_id)
    if run is None:
        raise SyncRunNotFound(run_id)
    return jsonify(run)


@bp.get("/<int:run_id>/failures")
def failures(run_id: int):
    limit, offset = page()
    if sync_runs.get_run(get_engine(), run_id) is None:
        raise SyncRunNotFound(run_id)
    items, total = sync_runs.list_failures(get_engine(), run_id, limit=limit, offset=offset)
    return jsonify({"items": items, "total": total})

"""``/api/jobs/failed`` and ``/api/queues``: what failed, why, run it again, and how each queue is doing."""

from __future__ import annotations

import re

from flask import Blueprint, current_app, jsonify, request

from antrian.errors import InvalidInput
from antrian.jobs import failed_jobs, queue_stats
from sync_api.web import auth
from sync_api.web.extensions import get_broker, get_engine
from sync_api.web.pagination import page
from sync_api.web.validation import json_object

bp = Blueprint("jobs", __name__, url_prefix="/api")
bp.before_request(auth.require_token)

#: The largest id PostgreSQL's bigint holds.
MAX_ID = 2**63 - 1


def _source() -> str:
    """Who asked, for the audit trail: the admin page's scripts, or an API client."""
    return "admin" if request.headers.get(auth.SCRIPT_HEADER) else "api"


def _job_id(raw: str) -> int:
    if not re.fullmatch(r"[0-9]{1,19}", raw) or not 0 < int(raw) <= MAX_ID:
        raise InvalidInput("a failed job id is a positive whole number")
    return int(raw)


def _queue() -> str | None:
    """``?queue=`` or the JSON body's ``queue``: one of SPEC's queues, or absent for all."""
    queue = request.args.get("queue")
    if request.get_data():
        body = json_object()
        unknown = set(body) - {"queue"}
        if unknown:
            raise InvalidInput(f"unknown field(s): {', '.join(sorted(unknown))}")
        if "queue" in body:
            if queue is not None and body["queue"] != queue:
                raise InvalidInput("queue is given twice, differently")
            queue = body["queue"]
    if queue is not None and queue not in queue_stats.SPEC_QUEUES:
        raise InvalidInput(f"queue must be one of {', '.join(queue_stats.SPEC_QUEUES)}")
    return queue


@bp.get("/jobs/failed")
def list_failed():
    limit, offset = page()
    items, total = failed_jobs.list_failed(get_engine(), queue=_queue(), limit=limit, offset=offset)
    return jsonify({"items": items, "total": total})


@bp.get("/jobs/failed/<raw_id>")
def show(raw_id: str):
    return jsonify(failed_jobs.get(get_engine(), _job_id(raw_id)))


@bp.post("/jobs/failed/<raw_id>/retry")
def retry(raw_id: str):
    job_id = _job_id(raw_id)
    settings = current_app.config["ANTRIAN"]
    failed_jobs.retry(get_engine(), get_broker(), settings.broker_url, job_id=job_id, source=_source())
    return jsonify({"retried": 1, "id": job_id}), 202


@bp.post("/jobs/failed/retry-all")
def retry_all():
    queue = _queue()
    settings = current_app.config["ANTRIAN"]
    count = failed_jobs.retry(get_engine(), get_broker(), settings.broker_url, queue=queue, source=_source())
    return jsonify({"retried": count, "queue": queue}), 202


@bp.delete("/jobs/failed")
def flush():
    queue = _queue()
    raw_age = request.args.get("older_than")
    try:
        age = failed_jobs.parse_age(raw_age) if raw_age is not None else None
    except InvalidInput as exc:
        raise InvalidInput(f"older_than: {exc}") from None
    count = failed_jobs.flush(get_engine(), queue=queue, older_than=age, source=_source())
    return jsonify({"flushed": count, "queue": queue, "older_than": raw_age})


@bp.get("/queues")
def queues():
    stats = queue_stats.collect(current_app.config["ANTRIAN"], get_engine())
    return jsonify({"items": [s.as_dict() for s in stats], "total": len(stats)})

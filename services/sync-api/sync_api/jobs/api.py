"""``/api/jobs/failed`` and ``/api/queues``: what failed, why, run it again, and how each queue is doing."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from antrian.errors import InvalidInput
from antrian.jobs import failed_jobs, pauses, queue_stats
from sync_api.jobs.schemas import (
    FailedJob,
    FailedJobs,
    FailedJobsQuery,
    Flushed,
    FlushQuery,
    Forgotten,
    OfQueue,
    QueueChoice,
    QueuePause,
    Queues,
    Retried,
)
from sync_api.web import auth
from sync_api.web.extensions import get_broker, get_engine
from sync_api.web.openapi import documented
from sync_api.web.validation import MAX_ID, json_object

bp = Blueprint("jobs", __name__, url_prefix="/api")
bp.before_request(auth.require_by_method)


#: A failed job's id in a path (anything else names no failed job: 404).
JOB_ID = f"<int(min=1, max={MAX_ID}):job_id>"


def _queue() -> str | None:
    """``?queue=`` or the JSON body's ``queue``: one of SPEC's queues, or absent for all."""
    queue = request.args.get("queue")
    if request.get_data():
        body = json_object()
        unknown = set(body) - {"queue"}
        if unknown:
            raise InvalidInput(f"unknown field(s): {', '.join(sorted(unknown))}")
        if body.get("queue") is not None:  # null is no choice, as leaving it out
            if queue is not None and body["queue"] != queue:
                raise InvalidInput("queue is given twice, differently")
            queue = body["queue"]
    if queue is not None and queue not in queue_stats.SPEC_QUEUES:
        raise InvalidInput(f"queue must be one of {', '.join(queue_stats.SPEC_QUEUES)}")
    return queue


@bp.get("/jobs/failed")
@documented(tags=("jobs",), query=FailedJobsQuery, ok={"HTTP_200": FailedJobs}, errors=(400,))
def list_failed(query: FailedJobsQuery):
    """The failed jobs (out of attempts, kept with their last exception), newest first."""
    items, total = failed_jobs.list_failed(get_engine(), queue=query.queue, search=query.q, limit=query.limit,
                                           offset=query.offset)
    return jsonify({"items": items, "total": total})


@bp.get(f"/jobs/failed/{JOB_ID}")
@documented(tags=("jobs",), ok={"HTTP_200": FailedJob}, errors=(400, 404))
def show(job_id: int):
    """One failed job with its traceback."""
    return jsonify(failed_jobs.get(get_engine(), job_id))


#: The same path as JOB_ID's GET, without bounds in the rule: werkzeug answers a second method on one path whose
#: converter refuses the value with 405 instead of 404 (the GET rule's method is remembered as "allowed"), so the
#: view checks the bounds itself. Documented like JOB_ID (1 to MAX_ID).
_ANY_JOB_ID = "<int:job_id>"


@bp.delete(f"/jobs/failed/{_ANY_JOB_ID}")
@documented(tags=("jobs",), ok={"HTTP_200": Forgotten}, errors=(400, 404))
def forget(job_id: int):
    """Delete one failed job for good."""
    if not 1 <= job_id <= MAX_ID:
        raise failed_jobs.FailedJobNotFound(job_id)
    failed_jobs.remove(get_engine(), job_id, by=auth.actor())
    return jsonify({"deleted": 1, "id": job_id})


@bp.post(f"/jobs/failed/{JOB_ID}/retry")
@documented(tags=("jobs",), ok={"HTTP_202": Retried}, errors=(400, 404))
def retry(job_id: int):
    """Put one failed job back on its queue with a fresh attempt count."""
    settings = current_app.config["ANTRIAN"]
    failed_jobs.retry(get_engine(), get_broker(), settings.broker_url, job_id=job_id, by=auth.actor())
    return jsonify({"retried": 1, "id": job_id}), 202


@bp.post("/jobs/failed/retry-all")
@documented(tags=("jobs",), query=OfQueue, body=QueueChoice, body_optional=True, ok={"HTTP_202": Retried},
            errors=(400,))
def retry_all():
    """Put every failed job (or one queue's) back on its queue."""
    queue = _queue()
    settings = current_app.config["ANTRIAN"]
    count = failed_jobs.retry(get_engine(), get_broker(), settings.broker_url, queue=queue, by=auth.actor())
    return jsonify({"retried": count, "queue": queue}), 202


@bp.delete("/jobs/failed")
@documented(tags=("jobs",), query=FlushQuery, body=QueueChoice, body_optional=True, ok={"HTTP_200": Flushed},
            errors=(400,))
def flush():
    """Delete failed jobs for good (every one, one queue's, or those older than ``older_than``)."""
    queue = _queue()
    raw_age = request.args.get("older_than")
    try:
        age = failed_jobs.parse_age(raw_age) if raw_age is not None else None
    except InvalidInput as exc:
        raise InvalidInput(f"older_than: {exc}") from None
    count = failed_jobs.flush(get_engine(), queue=queue, older_than=age, by=auth.actor())
    return jsonify({"flushed": count, "queue": queue, "older_than": raw_age})


@bp.get("/queues")
@documented(tags=("jobs",), ok={"HTTP_200": Queues})
def queues():
    """Each queue's ready, unacknowledged, delayed and dead-lettered messages, its waits and whether it is paused."""
    stats = queue_stats.collect(current_app.config["ANTRIAN"], get_engine())
    return jsonify({"items": [s.as_dict() for s in stats], "total": len(stats)})


@bp.post("/queues/<name>/pause")
@documented(tags=("jobs",), ok={"HTTP_200": QueuePause}, errors=(404,))
def pause(name: str):
    """Stop every worker on every host from taking the queue's messages (within seconds); they stay queued.

    Messages already running finish; a paused queue stays paused across restarts. Pausing it again changes nothing.
    """
    return jsonify(pauses.pause(get_engine(), name, by=auth.actor()).as_dict())


@bp.post("/queues/<name>/resume")
@documented(tags=("jobs",), ok={"HTTP_200": QueuePause}, errors=(404,))
def resume(name: str):
    """Let the workers take the queue's messages again. Resuming a queue that runs changes nothing."""
    pauses.resume(get_engine(), name, by=auth.actor())
    return jsonify(pauses.state(get_engine(), name))

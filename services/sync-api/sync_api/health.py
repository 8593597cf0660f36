"""``/healthz`` (alive), ``/readyz`` (database and broker reachable) and ``/metrics``."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from antrian.errors import DependencyUnavailable
from antrian.metrics import exposition
from antrian.startup import check_broker, check_database

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    settings = current_app.config["ANTRIAN"]
    checks, problems = {}, []
    for name, check in (("database", check_database), ("broker", check_broker)):
        try:
            check(settings)
            checks[name] = "ok"
        except DependencyUnavailable as exc:
            checks[name] = "unreachable"
            problems.append(str(exc))
    if problems:
        return jsonify({"status": "unavailable", "error": "; ".join(problems), **checks}), 503
    return jsonify({"status": "ok", **checks})


@bp.get("/metrics")
def metrics():
    body, content_type = exposition()
    return Response(body, content_type=content_type)

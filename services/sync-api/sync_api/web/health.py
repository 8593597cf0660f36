"""``/healthz`` (alive), ``/readyz`` (database and broker reachable) and ``/metrics``."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from antrian.db.engine import ping, redact
from antrian.errors import DependencyUnavailable
from antrian.metrics import exposition
from antrian.runtime.startup import check_broker
from sync_api.web.extensions import get_engine
from sync_api.web.openapi import PUBLIC, documented
from sync_api.web.schemas import Health, Readiness
from sync_api.web.state_metrics import DatabaseStateCollector, QueueStatsCollector

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@documented(tags=("health",), security=PUBLIC, ok={"HTTP_200": Health})
def healthz():
    """The process is alive."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
@documented(tags=("health",), security=PUBLIC, ok={"HTTP_200": Readiness})
def readyz():
    """The database and the broker are reachable (503 with ``error`` naming what is not)."""
    settings = current_app.config["ANTRIAN"]
    checks, problems = {}, []
    for name, check in (("database", _check_database), ("broker", check_broker)):
        try:
            check(settings)
            checks[name] = "ok"
        except DependencyUnavailable as exc:
            checks[name] = "unreachable"
            problems.append(str(exc))
    if problems:
        return jsonify({"status": "unavailable", "error": "; ".join(problems), **checks}), 503
    return jsonify({"status": "ok", **checks})


def _check_database(settings) -> None:
    """Through the app's own pool: a probe every few seconds opens no new connection."""
    try:
        ping(get_engine())
    except Exception as exc:  # noqa: BLE001 - any failure means "unreachable" here
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise DependencyUnavailable(f"cannot reach the database at {redact(settings.database_url)}: {reason}") from None


@bp.get("/metrics")
@documented(tags=("health",), security=PUBLIC, ok={"HTTP_200": None})
def metrics():
    """Prometheus metrics (text exposition format)."""
    settings = current_app.config["ANTRIAN"]
    body, content_type = exposition(
        DatabaseStateCollector(get_engine()), QueueStatsCollector(settings, get_engine()),
        multiprocess_dir=settings.prometheus_multiproc_dir,
    )
    return Response(body, content_type=content_type)

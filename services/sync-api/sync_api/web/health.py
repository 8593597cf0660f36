"""``/healthz`` (alive) and ``/readyz`` (database and broker reachable).

``/metrics`` is not here: gunicorn's master serves it on ``METRICS_PORT`` (:mod:`sync_api.gunicorn_conf`,
:mod:`sync_api.web.state_metrics`), away from the API's port.

``/readyz`` answers anyone without a token, so it says only which dependency is down; why (the redacted
URL and the driver's error) goes to the log, one line per dependency, when it starts failing or its reason
changes, and at most once a minute while it keeps failing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from flask import Blueprint, current_app, jsonify

from antrian.config import Settings
from antrian.db.engine import ping, redact
from antrian.errors import DependencyUnavailable
from antrian.runtime.startup import check_broker
from sync_api.web.extensions import get_engine
from sync_api.web.openapi import PUBLIC, documented
from sync_api.web.schemas import Health, Readiness

logger = logging.getLogger(__name__)

bp = Blueprint("health", __name__)

#: Seconds a successful broker check stands for: a probe every few seconds opens at most one AMQP connection
#: per process in this time. A failure is never remembered: the next probe checks again.
BROKER_OK_FOR_S = 10.0
#: A dependency that keeps failing for the same reason is logged again after this many seconds.
LOG_AGAIN_AFTER_S = 60.0


@bp.get("/healthz")
@documented(tags=("health",), security=PUBLIC, ok={"HTTP_200": Health})
def healthz():
    """The process is alive."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
@documented(tags=("health",), security=PUBLIC, ok={"HTTP_200": Readiness})
def readyz():
    """The database and the broker are reachable; 503 naming only which is not (why is logged)."""
    settings = current_app.config["ANTRIAN"]
    state = current_app.extensions.get("antrian.readiness") or current_app.extensions.setdefault(
        "antrian.readiness", _State())
    checks = {name: _probe(state.log, name, check, settings)
              for name, check in (("database", _check_database), ("broker", state.broker.check))}
    down = [name for name, answer in checks.items() if answer == "unreachable"]
    if down:  # ``error`` as every 503 of the API has it (ErrorBody), naming only what is down
        return jsonify({"status": "unavailable", **checks, "error": f"{' and '.join(down)} unreachable"}), 503
    return jsonify({"status": "ok", **checks})


class _State:
    """What the probes of one app (one process) remember."""

    def __init__(self) -> None:
        self.broker = _RecentBrokerCheck()
        self.log = _FailureLog()


def _probe(log: _FailureLog, name: str, check: Callable[[Settings], None], settings: Settings) -> str:
    try:
        check(settings)
    except DependencyUnavailable as exc:
        log.failed(name, str(exc))
        return "unreachable"
    log.ok(name)
    return "ok"


def _check_database(settings: Settings) -> None:
    """Through the app's own pool: a probe every few seconds opens no new connection."""
    try:
        ping(get_engine())
    except Exception as exc:  # noqa: BLE001 - any failure means "unreachable" here
        reason = (str(getattr(exc, "orig", exc)).strip().splitlines() or [type(exc).__name__])[0]
        raise DependencyUnavailable(f"cannot reach the database at {redact(settings.database_url)}: {reason}") from None


class _RecentBrokerCheck:
    """:func:`antrian.runtime.startup.check_broker` (one AMQP connection opened and closed, 3 s timeout), its
    success remembered for :data:`BROKER_OK_FOR_S`; concurrent probes share one check.

    Why not keep a connection open and look at it: pika's connections are not thread-safe and notice a dead
    broker only when they next read or write (heartbeats every 30 s), so "open" would say little; a fresh
    handshake that authenticates is the real answer, and remembering a success makes it rare.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ok_until = float("-inf")

    def check(self, settings: Settings) -> None:
        with self._lock:  # a probe waits at most for one check in flight (its timeout bounds it)
            if time.monotonic() < self._ok_until:
                return
            check_broker(settings)
            self._ok_until = time.monotonic() + BROKER_OK_FOR_S


class _FailureLog:
    """One warning when a dependency starts failing or its reason changes, then once a minute while it lasts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, tuple[str, float]] = {}

    def failed(self, name: str, reason: str) -> None:
        now = time.monotonic()
        with self._lock:
            previous = self._last.get(name)
            if previous is not None and previous[0] == reason and now - previous[1] < LOG_AGAIN_AFTER_S:
                return
            self._last[name] = (reason, now)
        logger.warning("readiness: %s unreachable: %s", name, reason)

    def ok(self, name: str) -> None:
        with self._lock:
            if self._last.pop(name, None) is None:
                return
        logger.info("readiness: %s reachable again", name)


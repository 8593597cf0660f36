"""The Dramatiq actors of queue ``booking-expiry``: the expiry sweep and the reconciliation of payments.

One attempt each: the next scheduled run is the retry.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta

import dramatiq
from sqlalchemy import Engine

from antrian.bookings import reconcile
from antrian.bookings.gateway import StatusApi
from antrian.config import Settings
from antrian.db.engine import engine_for
from antrian.jobs import failed_jobs
from antrian.messages import BOOKING_EXPIRY_QUEUE, EXPIRE_UNPAID_BOOKINGS, PRUNE_FAILED_JOBS, RECONCILE_PAYMENTS
from antrian.runtime.per_process import PerProcess
from booking_expiry.bookings import sweep
from booking_expiry.bookings.metrics import RECONCILE_FAILURES, RECONCILE_LAST_SUCCESS, RECONCILED
from booking_expiry.bookings.retries import PRUNE, RECONCILE, RECONCILE_BUDGET_S, SWEEP

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Process:
    settings: Settings
    engine: Engine


def _process(settings: Settings) -> _Process:
    engine = engine_for(settings, pool_size=settings.db_pool_size_for("booking-expiry"))
    return _Process(settings=settings, engine=engine)


#: This process's settings and engine; the worker's boot calls ``configure(settings)``.
process = PerProcess(_process)
configure = process.configure


@dramatiq.actor(actor_name=EXPIRE_UNPAID_BOOKINGS.actor, queue_name=BOOKING_EXPIRY_QUEUE, **SWEEP.actor_options())
def expire_unpaid_bookings() -> None:
    """Expire every pending booking past its deadline and give its seats back (skips if a sweep is running)."""
    sweep.sweep(process.get().engine)


@dramatiq.actor(actor_name=RECONCILE_PAYMENTS.actor, queue_name=BOOKING_EXPIRY_QUEUE, **RECONCILE.actor_options())
def reconcile_payments() -> None:
    """Ask the gateway about every booking whose payment may have been missed, and apply what it says."""
    current = process.get().settings
    if not current.payment_server_key:
        logger.warning("payments are not reconciled: PAYMENT_SERVER_KEY is unset")
        return
    status_api = StatusApi(base_url=current.payment_status_api_url(), server_key=current.payment_server_key)
    try:
        done = reconcile.reconcile(process.get().engine, status_api, budget_s=RECONCILE_BUDGET_S)
    except Exception:
        RECONCILE_FAILURES.inc()
        raise
    for outcome, count in done.outcomes.items():
        RECONCILED.labels(outcome).inc(count)
    RECONCILED.labels("unknown").inc(done.unknown)
    RECONCILED.labels("deferred").inc(done.deferred + done.not_reached)
    RECONCILE_LAST_SUCCESS.set(time.time())


@dramatiq.actor(actor_name=PRUNE_FAILED_JOBS.actor, queue_name=BOOKING_EXPIRY_QUEUE, **PRUNE.actor_options())
def prune_failed_jobs() -> None:
    """Delete the failed jobs that failed longer than ``FAILED_JOBS_RETENTION_DAYS`` ago (Horizon's trim)."""
    days = process.get().settings.failed_jobs_retention_days
    pruned = failed_jobs.prune(process.get().engine, retention=timedelta(days=days))
    logger.info("pruned %d failed jobs older than %d days", pruned, days,
                extra={"event": "failed_jobs_pruned", "jobs": pruned, "retention_days": days})

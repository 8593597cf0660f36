"""The Dramatiq actors of queue ``sync-pembayaran``.

Retries follow SPEC: 3 attempts in all, with backoff, and only for what another attempt can
fix (timeouts, connection errors, 429 honouring Retry-After, 5xx). Everything else fails the
student at once, with the reason recorded, and the message is dead-lettered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import dramatiq
from dramatiq.middleware import CurrentMessage
from dramatiq.middleware.time_limit import TimeLimitExceeded

from antrian.amqp.publisher import ConfirmedPublisher
from antrian.config import Settings, load_settings
from antrian.db.engine import is_disconnect, make_engine
from antrian.jobs.failed_jobs import RETRIED_FROM
from antrian.messages import FAN_OUT_SYNC_RUN, SYNC_QUEUE, SYNC_STUDENT_PAYMENT
from sync_api.sync import fanout
from sync_api.sync.student_sync import FIRST, RETRIED, StudentSync, StudentSyncFailed
from sync_api.sync.upstream import SchoolApi, TransientUpstreamError

logger = logging.getLogger(__name__)

#: Retries after the first attempt: 3 attempts in all.
MAX_RETRIES = 2
#: Exponential backoff between attempts, in milliseconds (kept short: delayed messages wait in memory).
MIN_BACKOFF_MS, MAX_BACKOFF_MS = 1_000, 15_000
SYNC_TIME_LIMIT_MS = 60_000
FANOUT_TIME_LIMIT_MS = 30 * 60_000


@dataclass
class _Runtime:
    settings: Settings
    student_sync: StudentSync


_runtime: _Runtime | None = None


def configure(settings: Settings) -> None:
    """Build this process's engine and upstream client from ``settings``."""
    global _runtime
    engine = make_engine(settings.database_url, autocommit=True, pool_size=settings.db_pool_size or 5, max_overflow=8)
    school_api = SchoolApi(
        base_url=settings.require("upstream_base_url"),
        token=settings.upstream_token,
        timeout_s=settings.upstream_timeout_s,
    )
    _runtime = _Runtime(settings=settings, student_sync=StudentSync(engine=engine, school_api=school_api))


def runtime() -> _Runtime:
    if _runtime is None:
        configure(load_settings())
    return _runtime


def _is_transient(exception: BaseException) -> bool:
    return isinstance(exception, (TransientUpstreamError, dramatiq.Retry, TimeLimitExceeded)) or is_disconnect(
        exception
    )


def _should_retry(retries: int, exception: BaseException) -> bool:
    return retries < MAX_RETRIES and _is_transient(exception)


@dramatiq.actor(
    actor_name=SYNC_STUDENT_PAYMENT.actor,
    queue_name=SYNC_QUEUE,
    retry_when=_should_retry,
    min_backoff=MIN_BACKOFF_MS,
    max_backoff=MAX_BACKOFF_MS,
    time_limit=SYNC_TIME_LIMIT_MS,
    throws=(StudentSyncFailed,),
)
def sync_student_payment(idperson: int, run_id: int) -> None:
    """Fetch one student's pembayaran from the school API and store it, counting the outcome once."""
    message = CurrentMessage.get_current_message()
    options = message.options if message is not None else {}
    final_attempt = options.get("retries", 0) >= MAX_RETRIES
    # An operator's retry of the failed job: the student's recorded failure may become a success.
    from_ = RETRIED if options.get(RETRIED_FROM) is not None else FIRST
    student_sync = runtime().student_sync
    try:
        student_sync.sync(idperson, run_id, final_attempt=final_attempt, from_=from_)
    except TransientUpstreamError as exc:
        if final_attempt:
            raise
        # Retry is Dramatiq's quiet way to ask for another attempt (no traceback in the log).
        raise dramatiq.Retry(f"student {idperson}: {exc}", delay=exc.retry_after_ms) from exc
    except TimeLimitExceeded:
        if final_attempt:
            student_sync.record(idperson, run_id, status="failed", error="time limit exceeded (after 3 attempts)",
                                from_=from_)
        raise
    except StudentSyncFailed:
        raise
    except Exception as exc:
        if is_disconnect(exc):
            # The database is away: not the student's failure. The message is retried, and after
            # its last attempt it is kept dead-lettered with the student still pending, to retry.
            raise
        student_sync.record(idperson, run_id, status="failed", error=f"unexpected error: {exc!r}"[:500], from_=from_)
        raise StudentSyncFailed(f"student {idperson}: {exc!r}") from exc


#: The fan-out is safe to run again from its cursor, whatever stopped it.
FANOUT_MAX_RETRIES = 10


@dramatiq.actor(
    actor_name=FAN_OUT_SYNC_RUN.actor,
    queue_name=SYNC_QUEUE,
    retry_when=lambda retries, exception: retries < FANOUT_MAX_RETRIES,
    min_backoff=MIN_BACKOFF_MS,
    max_backoff=30_000,
    time_limit=FANOUT_TIME_LIMIT_MS,
)
def fan_out_sync_run(run_id: int) -> None:
    """Publish one ``sync_student_payment`` per student of the run, in confirmed batches."""
    current = runtime()
    fanout.fan_out(
        current.student_sync.engine, run_id, lambda: ConfirmedPublisher(current.settings.broker_url)
    )

"""The Dramatiq actors of queue ``sync-pembayaran``: one student's sync, and a run's fan-out.

Retries follow :mod:`sync_api.sync.retries`. A failure another attempt cannot fix fails the
student at once, with the reason recorded, and the message is kept as a failed job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import dramatiq
from dramatiq.middleware import CurrentMessage
from dramatiq.middleware.time_limit import TimeLimitExceeded

from antrian.amqp.publisher import ConfirmedPublisher
from antrian.config import Settings
from antrian.db.engine import engine_for, is_disconnect
from antrian.errors import RateLimitUnavailable
from antrian.jobs.failed_jobs import RETRIED_FROM
from antrian.messages import FAN_OUT_SYNC_RUN, SYNC_QUEUE, SYNC_STUDENT_PAYMENT
from antrian.rate_limit import RateLimiter
from antrian.runtime.per_process import PerProcess
from sync_api.sync import fanout
from sync_api.sync.batching import BatchTimeout
from sync_api.sync.errors import StudentSyncFailed, TransientUpstreamError, bounded
from sync_api.sync.retries import FAN_OUT, STUDENT
from sync_api.sync.student_sync import FIRST, RETRIED, StudentSync
from sync_api.sync.upstream import SchoolApi

logger = logging.getLogger(__name__)

#: The longest a student's job waits for an ``UPSTREAM_RATE_LIMIT`` token: a third of its time limit, so that the
#: request itself (``UPSTREAM_TIMEOUT_S``) still fits. Past it the job is retried (RateLimitUnavailable).
UPSTREAM_MAX_WAIT_S = STUDENT.time_limit_ms / 1000 / 3


@dataclass
class _Runtime:
    settings: Settings
    student_sync: StudentSync


def _make_runtime(settings: Settings) -> _Runtime:
    """This process's engine and upstream client, from ``settings``."""
    engine = engine_for(settings, autocommit=True, pool_size=settings.db_pool_size_for("sync-worker"), max_overflow=8)
    school_api = SchoolApi(
        base_url=settings.require("upstream_base_url"),
        token=settings.upstream_token,
        timeout_s=settings.upstream_timeout_s,
        max_response_bytes=settings.upstream_max_response_bytes,
        limiter=RateLimiter("upstream", settings.upstream_rate_limit, settings=settings,
                            max_wait_s=UPSTREAM_MAX_WAIT_S),
    )
    return _Runtime(settings=settings, student_sync=StudentSync(engine=engine, school_api=school_api))


#: The worker's boot calls ``configure(settings)``.
runtime = PerProcess(_make_runtime)
configure = runtime.configure


@dramatiq.actor(actor_name=SYNC_STUDENT_PAYMENT.actor, queue_name=SYNC_QUEUE, **STUDENT.actor_options())
def sync_student_payment(idperson: int, run_id: int) -> None:
    """Fetch one student's pembayaran from the school API and store it, counting the outcome once."""
    message = CurrentMessage.get_current_message()
    options = message.options if message is not None else {}
    final_attempt = STUDENT.is_final(message)
    # An operator's retry of the failed job: the student's recorded failure may become a success.
    from_ = RETRIED if options.get(RETRIED_FROM) is not None else FIRST
    student_sync = runtime.get().student_sync
    try:
        student_sync.sync(idperson, run_id, final_attempt=final_attempt, from_=from_)
    except TransientUpstreamError as exc:
        if final_attempt:
            raise
        # Retry is Dramatiq's quiet way to ask for another attempt (no traceback in the log).
        raise dramatiq.Retry(f"student {idperson}: {exc}", delay=exc.retry_after_ms) from exc
    except TimeLimitExceeded:
        if final_attempt:
            student_sync.record(idperson, run_id, status="failed", error=STUDENT.after_all("time limit exceeded"),
                                from_=from_)
        raise
    except StudentSyncFailed:
        raise
    except RateLimitUnavailable:
        # No token of UPSTREAM_RATE_LIMIT (its database away, or the limit far behind): nothing was asked of the
        # school API and it is not the student's failure; retried as a database outage is.
        raise
    except Exception as exc:
        if is_disconnect(exc) or isinstance(exc, BatchTimeout):
            # The database is away (or so slow that no batch answered): not the student's failure. The message is
            # retried, and after its last attempt it is kept dead-lettered with the student still pending, to retry.
            raise
        reason = bounded(f"unexpected error: {exc!r}")
        student_sync.record(idperson, run_id, status="failed", error=reason, from_=from_)
        raise StudentSyncFailed(f"student {idperson}: {reason}") from exc


@dramatiq.actor(actor_name=FAN_OUT_SYNC_RUN.actor, queue_name=SYNC_QUEUE, **FAN_OUT.actor_options())
def fan_out_sync_run(run_id: int) -> None:
    """Publish one ``sync_student_payment`` per student of the run, in confirmed batches."""
    current = runtime.get()
    fanout.fan_out(
        current.student_sync.engine, run_id, lambda: ConfirmedPublisher(current.settings.broker_url)
    )

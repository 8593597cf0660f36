"""The retry policies of queue ``sync-pembayaran`` (SPEC: 3 attempts, backoff, 60 s)."""

from __future__ import annotations

from antrian.errors import RateLimitUnavailable
from antrian.runtime.retries import RetryPolicy
from sync_api.sync.errors import StudentSyncFailed, TransientUpstreamError

#: A student's job: 3 attempts in all, retried only for what another attempt can fix (timeouts,
#: connection errors, 429 honouring Retry-After, 5xx, and no token of UPSTREAM_RATE_LIMIT in time); anything else
#: fails the student at once.
STUDENT = RetryPolicy(
    attempts=3, time_limit_ms=60_000, min_backoff_ms=1_000, max_backoff_ms=15_000,
    transient=(TransientUpstreamError, RateLimitUnavailable), throws=(StudentSyncFailed,),
)

#: A run's fan-out is safe to run again from its cursor, whatever stopped it. Its 30-minute time limit
#: is a watchdog, not a wait: a worker stopping meanwhile leaves it to be redelivered and resumed.
FAN_OUT = RetryPolicy(attempts=11, time_limit_ms=30 * 60_000, min_backoff_ms=1_000, max_backoff_ms=30_000)

"""The retry policy of queue ``emails`` (SPEC: 3 attempts, backoff, 120 s)."""

from __future__ import annotations

from antrian.errors import RateLimitUnavailable
from antrian.runtime.retries import RetryPolicy
from mailer.errors import EmailDeferred, PermanentFailure

#: An email: 3 attempts in all, with a short backoff, retried only for what another attempt can fix
#: (a 4xx reply, a lost SMTP or database connection, the time limit, no token of SMTP_RATE_LIMIT in time). A
#: permanent failure (a 5xx refusal, an unknown booking, an e-ticket for an unpaid booking) ends the message at once.
EMAIL = RetryPolicy(
    attempts=3, time_limit_ms=120_000, min_backoff_ms=1_000, max_backoff_ms=10_000,
    transient=(EmailDeferred, RateLimitUnavailable), throws=(PermanentFailure,),
)

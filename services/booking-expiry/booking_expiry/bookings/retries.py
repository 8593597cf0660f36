"""The retry policies of queue ``booking-expiry`` (SPEC: 1 attempt, 300 s): the next tick is the retry."""

from __future__ import annotations

from antrian.runtime.retries import never_retried

#: A sweep may take 300 s; a stopping worker waits as long for it to finish.
SWEEP = never_retried(time_limit_ms=300_000)
#: A reconciliation of payments: within its 300 s period; its next run is its retry.
RECONCILE = never_retried(time_limit_ms=240_000)

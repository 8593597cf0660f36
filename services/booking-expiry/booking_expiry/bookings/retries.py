"""The retry policies of queue ``booking-expiry`` (SPEC: 1 attempt, 300 s): the next tick is the retry."""

from __future__ import annotations

from antrian.runtime.retries import never_retried

#: A sweep may take 300 s; a stopping worker waits as long for it to finish.
SWEEP = never_retried(time_limit_ms=300_000)
#: A reconciliation of payments: within its 300 s period; its next run is its retry.
RECONCILE = never_retried(time_limit_ms=240_000)
#: A reconciliation takes no new batch after this many seconds: it ends well inside its time limit (a batch
#: of 500 orders takes about 1.3 s at the gateway's 400 a second), leaving the oldest expired orders for later.
RECONCILE_BUDGET_S = 0.75 * RECONCILE.time_limit_ms / 1000
#: The prune of old failed jobs: one statement; the next hourly run is its retry.
PRUNE = never_retried(time_limit_ms=120_000)

"""Metrics that worker processes count: failed jobs, waits (import only after the process set up its metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from antrian.jobs.waits import BUCKETS

JOBS_FAILED = Counter(
    "antrian_jobs_failed_total", "Jobs that ran out of attempts and were stored in failed_jobs.", ["queue", "actor"]
)
#: Observed by every worker process as a message starts (:mod:`antrian.runtime.wait_time`); ``queue`` is the
#: canonical queue (never ``.DQ``).
MESSAGE_WAIT = Histogram(
    "antrian_message_wait_seconds",
    "Time from a message's enqueue (or a delayed message's due time) to the start of its processing.",
    ["queue", "actor"],
    buckets=BUCKETS,
)

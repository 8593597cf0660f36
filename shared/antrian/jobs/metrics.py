"""Metrics of failed jobs that worker processes count (import only after the process set up its metrics)."""

from __future__ import annotations

from prometheus_client import Counter

JOBS_FAILED = Counter(
    "antrian_jobs_failed_total", "Jobs that ran out of attempts and were stored in failed_jobs.", ["queue", "actor"]
)

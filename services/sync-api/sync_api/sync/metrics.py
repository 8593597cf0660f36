"""sync-worker's own metrics, beside Dramatiq's message metrics (multiprocess mode, see antrian.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

UPSTREAM_SECONDS = Histogram(
    "antrian_upstream_request_seconds",
    "Latency of requests to the school API, by outcome.",
    ["outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
STUDENTS = Counter(
    "antrian_sync_students_total",
    "Students that reached a final outcome in a sync run (each counted once).",
    ["outcome"],
)
FANOUT_MESSAGES = Counter(
    "antrian_sync_fanout_messages_total",
    "Student messages the fan-out published with confirms (a batch published again after a crash counts again).",
)


def observe_upstream(outcome: str, seconds: float) -> None:
    UPSTREAM_SECONDS.labels(outcome).observe(seconds)

"""The sweep's metrics (Prometheus multiprocess mode: Dramatiq's worker processes write, its exposition reads)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

BOOKINGS_EXPIRED = Counter("antrian_bookings_expired_total", "Pending bookings expired by the sweep.")
SEATS_RELEASED = Counter("antrian_seats_released_total", "Seats given back to their tours by the sweep.")
SWEEP_SECONDS = Histogram(
    "antrian_expiry_sweep_seconds",
    "Wall time of one expiry sweep that ran (skipped sweeps excluded).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
SWEEPS_SKIPPED = Counter(
    "antrian_expiry_sweeps_skipped_total", "Sweeps that found another sweep running and did nothing."
)
#: The newest of every process's value: an alert compares it with time() to see a stale schedule.
LAST_SUCCESS = Gauge(
    "antrian_expiry_last_success_timestamp_seconds",
    "Unix time at which the last expiry sweep finished without error.",
    multiprocess_mode="max",
)

RECONCILED = Counter(
    "antrian_payments_reconciled_total",
    "Orders the gateway was asked about by reconciliation, by what applying its answer did.",
    ["outcome"],
)
RECONCILE_FAILURES = Counter(
    "antrian_payment_reconcile_failures_total", "Reconciliation runs that failed (the gateway answered nothing)."
)
RECONCILE_LAST_SUCCESS = Gauge(
    "antrian_payment_reconcile_last_success_timestamp_seconds",
    "Unix time at which the last reconciliation of payments finished.",
    multiprocess_mode="max",
)

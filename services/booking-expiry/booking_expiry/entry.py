"""Console entry points: ``booking-expiry`` (the sweep's Dramatiq worker) and ``booking-expiry-scheduler``."""

from __future__ import annotations

import sys

from antrian.runtime.workers import exec_worker
from booking_expiry.bookings.retries import SWEEP

#: How long a stopping worker lets a running sweep finish: its whole time limit.
WORKER_SHUTDOWN_TIMEOUT_MS = SWEEP.time_limit_ms


def worker() -> None:
    """Run the Dramatiq worker of queue booking-expiry; extra arguments go to dramatiq."""
    # The deployment's grace period is longer still than the sweep's time limit.
    exec_worker("booking-expiry", "booking_expiry.worker", sys.argv[1:], shutdown_timeout_ms=WORKER_SHUTDOWN_TIMEOUT_MS)


def scheduler() -> None:
    """Enqueue the sweep every EXPIRY_SWEEP_SECONDS: ``antrian schedule work``, as its own deployable."""
    from antrian.cli import main

    main(["schedule", "work", *sys.argv[1:]], prog_name="booking-expiry-scheduler")

"""Console entry points: ``booking-expiry`` (the sweep's Dramatiq worker) and ``booking-expiry-scheduler``."""

from __future__ import annotations

import sys

from antrian.runtime.workers import exec_worker
from booking_expiry.bookings.limits import SWEEP_TIME_LIMIT_MS


def worker() -> None:
    """Run the Dramatiq worker of queue booking-expiry; extra arguments go to dramatiq."""
    # A stopping worker lets a running sweep finish (its time limit) rather than cut it off: the
    # deployment's grace period is longer still.
    exec_worker("booking-expiry", "booking_expiry.worker", sys.argv[1:], shutdown_timeout_ms=SWEEP_TIME_LIMIT_MS)


def scheduler() -> None:
    """Enqueue the sweep every EXPIRY_SWEEP_SECONDS: ``antrian schedule work``, as its own deployable."""
    from antrian.cli import main

    main(["schedule", "work", *sys.argv[1:]], prog_name="booking-expiry-scheduler")

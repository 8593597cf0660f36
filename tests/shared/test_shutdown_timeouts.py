"""A stopping worker waits for its running jobs as long as their time limit (so a deploy cuts none off)."""

from __future__ import annotations

import pytest

from booking_expiry import entry as booking_expiry_entry
from booking_expiry.bookings.retries import SWEEP
from mailer import entry as mailer_entry
from mailer.emails.retries import EMAIL
from sync_api import entry as sync_entry
from sync_api.sync.retries import STUDENT

#: Fast tier: in process, or offline (make test-fast).
pytestmark = pytest.mark.fast


def test_each_worker_waits_for_its_running_jobs_time_limit_before_it_stops():
    assert sync_entry.WORKER_SHUTDOWN_TIMEOUT_MS >= STUDENT.time_limit_ms
    assert mailer_entry.WORKER_SHUTDOWN_TIMEOUT_MS >= EMAIL.time_limit_ms
    assert booking_expiry_entry.WORKER_SHUTDOWN_TIMEOUT_MS >= SWEEP.time_limit_ms

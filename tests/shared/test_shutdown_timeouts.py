"""A stopping worker waits for its running jobs as long as their time limit (so a deploy cuts none off).

booking-expiry passes its sweep's time limit itself (booking_expiry.entry)."""

from __future__ import annotations

from mailer import entry as mailer_entry
from mailer.emails.actors import EMAIL_TIME_LIMIT_MS
from sync_api import entry as sync_entry
from sync_api.sync.actors import SYNC_TIME_LIMIT_MS


def test_each_worker_waits_for_its_running_jobs_time_limit_before_it_stops():
    assert sync_entry.WORKER_SHUTDOWN_TIMEOUT_MS >= SYNC_TIME_LIMIT_MS
    assert mailer_entry.WORKER_SHUTDOWN_TIMEOUT_MS >= EMAIL_TIME_LIMIT_MS

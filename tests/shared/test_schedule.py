"""When a scheduled task is next due, with the clock passed in: slots aligned to the epoch, a little early.

Fast tier: the pure rule behind ``antrian schedule list`` and the scheduler's sleep (the claims that
enforce it in PostgreSQL are proven with real schedulers in tests/booking_expiry/test_schedule.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from antrian.config import load_settings
from antrian.schedule import MAX_EARLY_S, next_due, tasks

pytestmark = pytest.mark.fast

SWEEP = tasks(load_settings({"EXPIRY_SWEEP_SECONDS": "300"}))[0]
NOON = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)  # a slot boundary: 300 s divides the epoch's noon


def test_a_task_never_enqueued_is_due_now():
    assert next_due(SWEEP, None, now=NOON + timedelta(seconds=17)) == NOON + timedelta(seconds=17)


@pytest.mark.parametrize("into_slot_s", [0, 1, 150, 294])
def test_after_an_enqueue_the_task_is_due_at_the_next_slot_less_the_early_margin(into_slot_s):
    # Given the sweep enqueued somewhere in the noon slot, and the clock still in it
    enqueued = NOON + timedelta(seconds=into_slot_s)
    # Then it is next due when the 12:05 slot starts, claimable MAX_EARLY_S early (a cron clock a little ahead)
    due = next_due(SWEEP, enqueued, now=enqueued)
    assert due == NOON + timedelta(seconds=300 - MAX_EARLY_S)


def test_an_enqueue_within_the_early_margin_counts_for_the_next_slot():
    # Given a scheduler that claimed the 12:05 slot 3 s early (at 12:04:57)
    enqueued = NOON + timedelta(seconds=297)
    # Then the next due time is the 12:10 slot's, not 12:05's again
    assert next_due(SWEEP, enqueued, now=enqueued) == NOON + timedelta(seconds=600 - MAX_EARLY_S)


def test_a_task_overdue_is_due_now_not_in_the_past():
    enqueued, now = NOON, NOON + timedelta(hours=1, seconds=3)
    assert next_due(SWEEP, enqueued, now=now) == now


def test_a_short_period_claims_a_tenth_early():
    fast = tasks(load_settings({"EXPIRY_SWEEP_SECONDS": "10"}))[0]
    assert next_due(fast, NOON, now=NOON) == NOON + timedelta(seconds=9)

"""A sync run survives its broker and its database restarting for real, mid-run, with exact counts."""

from __future__ import annotations

import pytest

from antrian.access.audit import command_actor
from antrian.cli.demo import seed_students
from antrian.runtime.broker import make_broker
from antrian.sync.runs import get_run, start_run
from tests.support import restart_postgresql, restart_rabbitmq, settings_for_tests, wait_until
from tests.sync_api.sync.helpers import assert_exact_outcome, expected_failures

PERMANENT = 0.02


def processed(engine, run_id) -> int:
    try:
        return get_run(engine, run_id)["processed"]
    except Exception:  # noqa: BLE001 - the database is coming back
        return 0


@pytest.mark.restarts
@pytest.mark.parametrize("restart", [restart_rabbitmq, restart_postgresql], ids=["rabbitmq", "postgresql"])
def test_a_run_survives_a_restart(clean, start_school_api, start_worker, restart):
    # Given a run of 400 students going at a pace we can interrupt
    seed_students(clean, 400)
    worker = start_worker(start_school_api("--latency-ms", "50", "--permanent-rate", str(PERMANENT)), threads=4)
    broker = make_broker(settings_for_tests())
    run = start_run(clean, broker, by=command_actor())
    broker.close()
    wait_until(lambda: processed(clean, run["id"]) >= 60, timeout=60, what="60 students processed")

    # When the server restarts under it
    restart()
    assert processed(clean, run["id"]) < 400, "the run finished before the restart; nothing was proven"

    # Then the run finishes with exact counts, and the worker is still the same process
    wait_until(lambda: not get_run(clean, run["id"])["isRunning"], timeout=180, interval=0.5, what="the run to finish")
    failures = expected_failures(400, transient_rate=0, permanent_rate=PERMANENT)
    assert_exact_outcome(clean, get_run(clean, run["id"]), 400, failures)
    assert worker.process.poll() is None

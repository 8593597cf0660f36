"""The ``antrian`` command as a user runs it: a real subprocess, the test database and RabbitMQ vhost."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text

from tests.support import BIN, ROOT, base_env, purge_queues, take_messages
from tests.sync_api.sync.helpers import expected_failures

ANTRIAN = str(BIN / "antrian")
#: Seconds any one ``antrian`` call may take before the test gives up on it.
CALL_TIMEOUT_S = 45


def antrian(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``antrian ARGS`` with the tests' environment (plus ``env``); never raises on a non-zero exit."""
    return subprocess.run(
        [ANTRIAN, *args], env=base_env(**env), cwd=ROOT, capture_output=True, text=True, timeout=CALL_TIMEOUT_S
    )


def student_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM students")).scalar_one()


def tours(engine: Engine) -> list:
    with engine.connect() as connection:
        return connection.execute(text("SELECT name, quota, price, starts_at FROM tours ORDER BY id")).all()


@pytest.fixture
def leaves_nothing_running(clean: Engine) -> Iterator[Engine]:
    """``clean``, and afterwards no run left "running" and no fan-out left queued for later tests."""
    yield clean
    purge_queues()
    with clean.begin() as connection:
        connection.execute(
            text("UPDATE sync_runs SET status = 'finished', finished_at = now() WHERE status = 'running'")
        )


def test_seed_demo_adds_students_only_once(clean):
    # Given an empty students table
    assert student_count(clean) == 0

    # When a user seeds 50 demo students
    first = antrian("seed-demo", "--students", "50", "--tours", "0")

    # Then 50 are added and said so
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == ["added 50 demo students", "added 0 demo tours"]
    assert student_count(clean) == 50

    # When they run the same command again
    second = antrian("seed-demo", "--students", "50", "--tours", "0")

    # Then nothing is added twice
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == ["added 0 demo students", "added 0 demo tours"]
    assert student_count(clean) == 50


def test_seed_demo_adds_tours_to_book_in_the_coming_weeks(clean):
    # When a user seeds 3 demo tours
    result = antrian("seed-demo", "--students", "0", "--tours", "3")

    # Then 3 are added and said so
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["added 0 demo students", "added 3 demo tours"]

    # And they are real tours: named, 20 to 40 seats, a price in whole rupiah, leaving in 2 to 12 weeks
    added = tours(clean)
    assert len(added) == 3 and len({tour.name for tour in added}) == 3
    now = datetime.now(UTC)
    for tour in added:
        assert tour.name.strip() and 20 <= tour.quota <= 40
        assert tour.price >= 100_000 and tour.price == tour.price.to_integral_value()
        assert now + timedelta(days=13) < tour.starts_at < now + timedelta(weeks=12, days=1)


def test_seed_demo_if_empty_fills_only_the_empty_tables(clean):
    # Given students but no tours
    assert antrian("seed-demo", "--students", "10", "--tours", "0").returncode == 0

    # When make run seeds what is empty
    first = antrian("seed-demo", "--if-empty", "--tours", "4")

    # Then the tours are added and the students left alone
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == ["students exist already; no demo students added", "added 4 demo tours"]
    assert (student_count(clean), len(tours(clean))) == (10, 4)

    # When it does so again
    second = antrian("seed-demo", "--if-empty", "--tours", "4")

    # Then nothing is added
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == [
        "students exist already; no demo students added", "tours exist already; no demo tours added"
    ]
    assert (student_count(clean), len(tours(clean))) == (10, 4)


def test_sync_start_wait_draws_a_bar_and_prints_the_finished_run(clean, start_school_api, start_worker):
    # Given 50 students, a school API that refuses 10% of them for good, and a running sync-worker
    assert antrian("seed-demo", "--students", "50").returncode == 0
    failures = expected_failures(50, transient_rate=0, permanent_rate=0.10)
    assert failures  # the exact failed count below means something
    upstream = start_school_api("--permanent-rate", "0.10", "--latency-ms", "5")
    start_worker(upstream, processes=1, threads=4)

    # When the user starts a run and waits for it
    result = antrian("sync", "start", "--wait")

    # Then it exits 0, saying which run it started
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    started = re.fullmatch(r"sync run (\d+) started for 50 students", lines[0])
    assert started, lines
    run_id = int(started.group(1))

    # And a progress bar (tqdm, on stderr) was drawn up to 50/50
    frames = [frame.strip() for frame in re.split(r"[\r\n]+", result.stderr) if frame.strip()]
    assert any(f"sync run {run_id}" in frame and "50/50" in frame for frame in frames), result.stderr
    assert "Traceback" not in result.stderr

    # And the last line is the finished run as JSON, with exact counts
    assert len(lines) == 2, lines
    run = json.loads(lines[-1])
    assert run["id"] == run_id
    assert run["status"] == "finished" and run["isRunning"] is False and run["finished_at"]
    assert (run["total"], run["processed"], run["failed"]) == (50, 50, len(failures))
    assert run["successCount"] == 50 - len(failures) and run["percent"] == 100.0


def test_a_second_sync_start_while_one_runs_is_refused_in_one_line(leaves_nothing_running):
    # Given some students and no sync-worker at all, so a run that starts stays running
    assert antrian("seed-demo", "--students", "5").returncode == 0
    first = antrian("sync", "start")
    assert first.returncode == 0, first.stderr
    run_id = int(re.fullmatch(r"sync run (\d+) started for 5 students\n", first.stdout).group(1))

    # When the user starts another run
    second = antrian("sync", "start")

    # Then it is refused with a non-zero exit and one clear line naming the run still going
    assert second.returncode != 0
    assert second.stdout == ""
    assert second.stderr.strip().splitlines() == [f"Error: sync run {run_id} is still running"]

    # And the first run is untouched and no second run was recorded
    with leaves_nothing_running.connect() as connection:
        runs = connection.execute(text("SELECT id, status FROM sync_runs ORDER BY id")).all()
    assert [tuple(r) for r in runs] == [(run_id, "running")]


def test_migrate_applies_migrations_to_a_reachable_database(infrastructure):
    # Given the (already migrated) test database
    # When the user migrates it
    result = antrian("migrate")

    # Then it succeeds, once more, without complaint
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "migrations applied"
    assert "Traceback" not in result.stderr


def test_migrate_with_an_unreachable_database_says_so_in_one_line():
    # Given a DATABASE_URL whose port nothing listens on
    # When the user migrates
    result = antrian("migrate", DATABASE_URL="postgresql://postgres@127.0.0.1:1/x")

    # Then it exits 3 (unavailable) with one line naming the database, and no traceback
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("antrian migrate: cannot reach the database at ")
    assert "127.0.0.1:1/x" in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_migrate_with_a_database_url_that_is_not_postgresql_names_the_variable():
    # Given a DATABASE_URL of another database
    # When the user migrates
    result = antrian("migrate", DATABASE_URL="mysql://x")

    # Then it exits 2 (configuration) with one line naming DATABASE_URL, and no traceback
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "DATABASE_URL" in lines[0] and "postgresql://" in lines[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


#: The sweep's period in the schedule tests: an hour, so that a run and the next fall in one slot.
HOURLY = {"EXPIRY_SWEEP_SECONDS": "3600", "PAYMENT_RECONCILE_SECONDS": "3600"}


def not_near_the_end_of_an_hour() -> None:
    """Wait out the last half minute of an hour, so that the calls of a test all fall in one slot (a slot may be
    claimed a few seconds before its hour begins)."""
    left = 3600 - time.time() % 3600
    if left < 30:
        time.sleep(left + 0.5)


def sweep_messages() -> list[dict]:
    return take_messages("booking-expiry")


def test_schedule_list_shows_the_sweep_due_now_then_when_it_is_next_due_after_a_run(clean):
    not_near_the_end_of_an_hour()
    # Given a fresh database, where the sweep has never been enqueued
    # When the user lists the schedule
    fresh = antrian("schedule", "list", **HOURLY)

    # Then the sweep is there with its period, queue and actor, never enqueued and due now
    assert fresh.returncode == 0, fresh.stderr
    first, description, reconcile, reconcile_description, prune, prune_description = fresh.stdout.splitlines()
    assert re.fullmatch(
        r"every 1h\s+expire-unpaid-bookings\s+booking-expiry: expire_unpaid_bookings\(\)"
        r"\s+last enqueued never\s+next due now", first
    ), first
    assert "EXPIRY_SWEEP_SECONDS" in description
    # (and beside it the reconciliation of payments)
    assert re.fullmatch(
        r"every 1h\s+reconcile-payments\s+booking-expiry: reconcile_payments\(\)"
        r"\s+last enqueued never\s+next due now", reconcile
    ), reconcile
    assert "PAYMENT_RECONCILE_SECONDS" in reconcile_description
    # (and the hourly prune of failed jobs past their retention)
    assert re.fullmatch(
        r"every 1h\s+prune-failed-jobs\s+booking-expiry: prune_failed_jobs\(\)"
        r"\s+last enqueued never\s+next due now", prune
    ), prune
    assert "older than 7 days" in prune_description and "FAILED_JOBS_RETENTION_DAYS" in prune_description

    # When it has been enqueued, and the user lists the schedule again
    ran = antrian("schedule", "run", **HOURLY).stdout
    assert ran == "enqueued expire-unpaid-bookings\nenqueued reconcile-payments\nenqueued prune-failed-jobs\n"
    after = antrian("schedule", "list", **HOURLY)

    # Then it was last enqueued just now and is next due when the next hour begins (or a few seconds before:
    # a slot may be claimed a little early)
    assert after.returncode == 0, after.stderr
    line = after.stdout.splitlines()[0]
    shown = re.search(r"last enqueued (\S+)\s+next due in ((\d+)m)?((\d+)s)? \((\S+)\)$", line)
    assert shown, line
    last, due = datetime.fromisoformat(shown[1]), datetime.fromisoformat(shown[6])
    wait = timedelta(minutes=int(shown[3] or 0), seconds=int(shown[5] or 0))
    now = datetime.now(UTC)
    assert abs((now - last).total_seconds()) < 30
    next_hour = (now + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    assert next_hour - timedelta(seconds=10) <= due <= next_hour, due
    assert abs((now + wait - due).total_seconds()) < 30 and wait > timedelta(0)
    sweep_messages()


def test_schedule_run_enqueues_the_sweep_once_and_then_nothing_is_due(clean):
    not_near_the_end_of_an_hour()
    # When the user runs what is due, twice
    first = antrian("schedule", "run", **HOURLY)
    second = antrian("schedule", "run", **HOURLY)

    # Then the first enqueues the sweep and the reconciliation and says so once each, the second finds nothing due
    assert (first.returncode, first.stdout, first.stderr) == (
        0, "enqueued expire-unpaid-bookings\nenqueued reconcile-payments\nenqueued prune-failed-jobs\n", "")
    assert (second.returncode, second.stdout, second.stderr) == (0, "nothing is due\n", "")

    # And exactly one message of each is on queue booking-expiry
    messages = sweep_messages()
    assert sorted((message["queue_name"], message["actor_name"], message["args"]) for message in messages) == [
        ("booking-expiry", "expire_unpaid_bookings", []), ("booking-expiry", "prune_failed_jobs", []),
        ("booking-expiry", "reconcile_payments", []),
    ]


def test_schedule_with_bad_settings_says_so_in_one_line_and_enqueues_nothing(clean):
    def one_line(result, code: int) -> str:
        assert result.returncode == code, (result.returncode, result.stderr)
        assert result.stdout == "" and "Traceback" not in result.stderr
        [line] = result.stderr.strip().splitlines()
        return line

    # A period that is not a number: exit 2 (configuration), naming the variable
    line = one_line(antrian("schedule", "run", EXPIRY_SWEEP_SECONDS="five minutes"), 2)
    assert line.startswith("antrian schedule: EXPIRY_SWEEP_SECONDS=") and "not valid" in line
    assert one_line(antrian("schedule", "list", EXPIRY_SWEEP_SECONDS="0"), 2).startswith(
        "antrian schedule: EXPIRY_SWEEP_SECONDS="
    )

    # RabbitMQ unreachable: `schedule run` exits 3 (unavailable), naming the broker, and claims no slot
    line = one_line(antrian("schedule", "run", BROKER_URL="amqp://guest:guest@127.0.0.1:1/"), 3)
    assert line.startswith("antrian schedule: cannot reach the broker at amqp://127.0.0.1:1/"), line
    # ... while `schedule list`, which needs only the database, still answers
    listed = antrian("schedule", "list", BROKER_URL="amqp://guest:guest@127.0.0.1:1/")
    assert listed.returncode == 0 and "next due now" in listed.stdout, listed.stderr

    # The database unreachable: exit 3, naming it
    line = one_line(antrian("schedule", "list", DATABASE_URL="postgresql://postgres@127.0.0.1:1/x"), 3)
    assert line.startswith("antrian schedule: cannot reach the database at ") and "127.0.0.1:1/x" in line

    # And nothing was enqueued or claimed by any of these
    assert sweep_messages() == []
    with clean.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM scheduled_task_runs")).scalar_one() == 0

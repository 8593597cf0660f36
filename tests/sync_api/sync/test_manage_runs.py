"""Sync runs an operator manages: listed, a stalled one cancelled or resumed, from the API and the terminal.

Real processes: sync-api, sync-worker, the development school API. A run is stalled on purpose: its
fan-out is done by the test with no worker consuming, and one student's job is taken off the queue.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import requests
from sqlalchemy import text

from antrian.cli.demo import seed_students
from tests.support import BIN, ROOT, base_env, free_port, metric, settled, wait_until
from tests.sync_api.sync.helpers import assert_exact_outcome, idpersons, wait_for_run
from tests.sync_api.sync.stalled import get_run, start_fanned_out_run, start_stalled_run

STUDENTS = 30


def antrian(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "antrian"), *args], env=base_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=45)


def items(engine, run_id: int) -> dict[int, str]:
    with engine.connect() as connection:
        return dict(connection.execute(
            text("SELECT idperson, status FROM sync_items WHERE run_id = :id"), {"id": run_id}).all())


def wait_for_processed(web: str, auth: dict, run_id: int, processed: int) -> dict:
    return wait_until(lambda: (run := get_run(web, auth, run_id))["processed"] == processed and run,
                      timeout=60, interval=0.2, what=f"{processed} students processed")


def test_a_stalled_run_is_cancelled_and_a_new_run_starts_and_finishes(
    clean, start_school_api, start_worker, start_web, auth
):
    # Given a run with one student's job lost, and a sync-worker that did all the others
    seed_students(clean, STUDENTS)
    upstream = start_school_api()
    web = start_web()
    run_id, lost = start_stalled_run(clean, web, auth)
    start_worker(upstream, threads=4)
    stalled = wait_for_processed(web, auth, run_id, STUDENTS - 1)
    assert stalled["isRunning"] and stalled["status"] == "running"
    # (no new run can start meanwhile, and the idle gauge counts the seconds since the last outcome)
    refused = requests.post(f"{web}/api/sync-runs", headers=auth, timeout=5)
    assert refused.status_code == 409 and refused.json()["id"] == run_id
    wait_until(lambda: metric(web.metrics, "antrian_sync_run_idle_seconds") >= 1, timeout=10,
               what="the idle gauge to rise")

    # When an operator cancels it
    response = requests.post(f"{web}/api/sync-runs/{run_id}/cancel", headers=auth, timeout=5)

    # Then it is cancelled, ended, with exact counts: only the students that reached an outcome
    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert cancelled["status"] == "cancelled" and not cancelled["isRunning"] and cancelled["finished_at"]
    assert (cancelled["total"], cancelled["processed"], cancelled["failed"]) == (STUDENTS, STUDENTS - 1, 0)
    assert get_run(web, auth, run_id) == cancelled
    assert items(clean, run_id) == {i: ("pending" if i == lost else "success") for i in idpersons(STUDENTS)}
    assert metric(web.metrics, "antrian_sync_run_idle_seconds") == 0
    # And it cannot be cancelled or resumed again
    for action in ("cancel", "resume"):
        again = requests.post(f"{web}/api/sync-runs/{run_id}/{action}", headers=auth, timeout=5)
        assert again.status_code == 409
        assert again.json() == {"error": f"sync run {run_id} is cancelled, not running", "id": run_id}

    # When a new run starts at once
    started = requests.post(f"{web}/api/sync-runs", headers=auth, timeout=5)
    assert started.status_code == 202, started.text

    # Then it finishes with exact counts, and the cancelled run's stay as they were
    run = wait_for_run(web, auth, started.json()["id"], timeout=60)
    assert_exact_outcome(clean, run, STUDENTS, set())
    assert get_run(web, auth, run_id) == cancelled

    # And the list shows both, newest first, a page at a time
    listed = requests.get(f"{web}/api/sync-runs", headers=auth, timeout=5).json()
    assert listed == {"items": [run, cancelled], "total": 2}
    second = requests.get(f"{web}/api/sync-runs?limit=1&offset=1", headers=auth, timeout=5).json()
    assert second == {"items": [cancelled], "total": 2}


def test_a_cancelled_runs_queued_jobs_and_fan_out_end_without_calling_the_school_api(
    clean, start_worker, start_web, auth
):
    # Given a run whose every job is queued, and another whose fan-out is queued, each cancelled before any
    # worker consumed: the first must be cancelled before the second may start
    seed_students(clean, STUDENTS)
    web = start_web()
    queued = start_fanned_out_run(clean, web, auth)
    assert requests.post(f"{web}/api/sync-runs/{queued}/cancel", headers=auth, timeout=5).status_code == 200
    fanned = requests.post(f"{web}/api/sync-runs", headers=auth, timeout=5).json()["id"]
    assert requests.post(f"{web}/api/sync-runs/{fanned}/cancel", headers=auth, timeout=5).status_code == 200

    # When a sync-worker consumes them, with a school API that nothing answers (a call would fail and retry)
    worker = start_worker(f"http://127.0.0.1:{free_port()}", threads=4)
    settled(timeout=60)

    # Then every job ended at once, without an outcome, a retry or a failed job; the fan-out published nothing
    assert items(clean, queued) == dict.fromkeys(idpersons(STUDENTS), "pending")
    assert items(clean, fanned) == {}
    for run_id in (queued, fanned):
        run = get_run(web, auth, run_id)
        assert (run["status"], run["processed"], run["failed"]) == ("cancelled", 0, 0)
    with clean.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM failed_jobs")).scalar_one() == 0
    assert "antrian_upstream_request_seconds_count" not in requests.get(worker.metrics_url, timeout=5).text


def test_resume_finishes_a_stalled_run_with_exact_counts(clean, start_school_api, start_worker, start_web, auth):
    # Given a stalled run: one student's job lost, all the others done
    seed_students(clean, STUDENTS)
    upstream = start_school_api()
    web = start_web()
    run_id, lost = start_stalled_run(clean, web, auth)
    start_worker(upstream, threads=4)
    wait_for_processed(web, auth, run_id, STUDENTS - 1)

    # When an operator resumes it
    response = requests.post(f"{web}/api/sync-runs/{run_id}/resume", headers=auth, timeout=5)

    # Then the one pending student's job is sent again and the run finishes, each student counted once
    assert response.status_code == 202, response.text
    assert response.json() == {"id": run_id, "status": "running", "pending": 1}
    run = wait_for_run(web, auth, run_id, timeout=60)
    assert_exact_outcome(clean, run, STUDENTS, set())
    # And a finished run cannot be resumed or cancelled
    for action in ("resume", "cancel"):
        again = requests.post(f"{web}/api/sync-runs/{run_id}/{action}", headers=auth, timeout=5)
        assert again.status_code == 409
        assert again.json() == {"error": f"sync run {run_id} is finished, not running", "id": run_id}


@pytest.mark.parametrize("action", ["cancel", "resume"])
def test_unknown_or_bad_run_ids(clean, start_web, auth, action):
    web = start_web()
    unknown = requests.post(f"{web}/api/sync-runs/999/{action}", headers=auth, timeout=5)
    assert unknown.status_code == 404 and unknown.json() == {"error": "sync run 999 not found"}
    for bad in ("abc", "-1", "1.5", "99999999999999999999"):
        assert requests.post(f"{web}/api/sync-runs/{bad}/{action}", headers=auth, timeout=5).status_code == 404
    assert requests.post(f"{web}/api/sync-runs/999/{action}", timeout=5).status_code == 401
    for query in ("limit=0", "limit=1001", "offset=-1", "limit=ten"):
        assert requests.get(f"{web}/api/sync-runs?{query}", headers=auth, timeout=5).status_code == 400
    assert requests.get(f"{web}/api/sync-runs", headers=auth, timeout=5).json() == {"items": [], "total": 0}


def test_the_antrian_command_lists_cancels_and_resumes_runs(clean, start_school_api, start_worker, start_web, auth):
    # Given no run yet
    assert antrian("sync", "list").stdout == "no sync runs\n"
    # And a stalled run: one student's job lost, all the others done
    seed_students(clean, STUDENTS)
    upstream = start_school_api()
    web = start_web()
    run_id, _lost = start_stalled_run(clean, web, auth)
    worker = start_worker(upstream, threads=4)
    wait_for_processed(web, auth, run_id, STUDENTS - 1)

    # When the operator lists the runs, then resumes the stalled one
    listed = antrian("sync", "list")
    assert listed.returncode == 0, listed.stderr
    header, row, summary = listed.stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "PROCESSED", "FAILED", "PERCENT", "STARTED", "(UTC)", "ENDED", "(UTC)"]
    assert re.fullmatch(rf"{run_id}\s+running\s+{STUDENTS - 1}/{STUDENTS}\s+0\s+96\.67%\s+\S+ \S+\s+-", row), row
    assert summary == "1 sync run"
    resumed = antrian("sync", "resume", str(run_id))

    # Then the run finishes
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == f"sync run {run_id} resumed: 1 pending students sent again\n"
    assert_exact_outcome(clean, wait_for_run(web, auth, run_id, timeout=60), STUDENTS, set())

    # When a new run is started and cancelled from the terminal before any worker took its fan-out
    worker.stop()
    started = antrian("sync", "start")
    assert started.returncode == 0, started.stderr
    second = int(re.match(r"sync run (\d+) started", started.stdout).group(1))
    cancelled = antrian("sync", "cancel", str(second))
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout == f"sync run {second} cancelled: 0 of {STUDENTS} students processed, 0 failed\n"

    # Then a worker takes its fan-out and sends nothing
    start_worker(upstream, threads=4)
    settled(timeout=60)
    run = get_run(web, auth, second)
    assert (run["status"], run["processed"]) == ("cancelled", 0)
    assert items(clean, second) == {}
    as_json = antrian("sync", "list", "--json").stdout.splitlines()
    assert [json.loads(line)["id"] for line in as_json] == [second, run_id]

    # And cancelling or resuming a run that is not running, or not there, is one line and exit code 1
    for args, message in (
        (("cancel", str(second)), f"sync run {second} is cancelled, not running"),
        (("resume", str(run_id)), f"sync run {run_id} is finished, not running"),
        (("cancel", "999"), "sync run 999 not found"),
        (("resume", "999"), "sync run 999 not found"),
    ):
        result = antrian("sync", *args)
        assert (result.returncode, result.stderr) == (1, f"Error: {message}\n"), result
    assert antrian("sync", "cancel", "abc").returncode == 2

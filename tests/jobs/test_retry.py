"""Retrying failed jobs, one or all, from the API and the command: each runs again with fresh attempts;
a student retried after the school API recovers turns the run's failure into a success, counts exact."""

from __future__ import annotations

import subprocess

import requests

from antrian.messages import EMAILS_QUEUE, SYNC_QUEUE
from tests.jobs.helpers import add_students, failed_rows, run_state, start_run, wait_for_failed
from tests.support import BIN, ROOT, base_env, queue_depth, settled, wait_until
from tests.sync_api.bookings.helpers import book, create_tour

STUDENTS = list(range(201, 221))
DOWN = {203, 207, 211, 215, 219}


def antrian(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "antrian"), *args], env=base_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def items(engine, run_id: int) -> dict[int, str]:
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(f"SELECT idperson, status FROM sync_items WHERE run_id = {run_id}")
        return dict(rows.all())


def test_retried_students_turn_their_runs_failures_into_successes_with_exact_counts(
    clean, school_api, workers, start_web, auth
):
    web = start_web()
    workers("sync-worker")
    add_students(clean, STUDENTS)
    school_api.down.update(DOWN)
    run_id = start_run(web, auth)
    wait_until(lambda: not run_state(web, auth, run_id)["isRunning"], timeout=60, what="the run to finish")
    rows = wait_for_failed(clean, len(DOWN), queue_name=SYNC_QUEUE)
    by_student = {row["args"][0]: row for row in rows}
    assert set(by_student) == DOWN and all(row["attempts"] == 3 for row in rows)
    run = run_state(web, auth, run_id)
    assert (run["processed"], run["failed"], run["successCount"]) == (20, 5, 15)

    # Retried while the school API is still down: three fresh attempts, stored again, the counts unchanged
    first = by_student[203]
    response = requests.post(f"{web}/api/jobs/failed/{first['id']}/retry", headers=auth, timeout=10)
    assert response.status_code == 202 and response.json() == {"retried": 1, "id": first["id"]}
    wait_until(lambda: school_api.calls[203] == 6, timeout=30, what="three more attempts for student 203")
    [again] = wait_for_failed(clean, 1, message_id=first["message_id"])
    assert again["id"] != first["id"] and again["attempts"] == 3
    assert len(failed_rows(clean)) == 5
    run = run_state(web, auth, run_id)
    assert (run["processed"], run["failed"], run["successCount"]) == (20, 5, 15)

    # The school API recovers. One retried over the API: one failure becomes a success
    school_api.recover()
    response = requests.post(f"{web}/api/jobs/failed/{again['id']}/retry", headers=auth, timeout=10)
    assert response.status_code == 202
    wait_until(lambda: items(clean, run_id)[203] == "success", timeout=30, what="student 203 synced")
    run = run_state(web, auth, run_id)
    assert (run["processed"], run["failed"], run["successCount"], run["percent"]) == (20, 4, 16, 100.0)
    assert not run["isRunning"] and len(failed_rows(clean)) == 4

    # The rest retried from the terminal, this queue only
    result = antrian("jobs", "retry", "--all", "--queue", SYNC_QUEUE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "retried 4 failed jobs"
    wait_until(lambda: set(items(clean, run_id).values()) == {"success"}, timeout=30, what="every student synced")
    settled()
    run = run_state(web, auth, run_id)
    assert (run["processed"], run["failed"], run["successCount"], run["total"]) == (20, 0, 20, 20)
    assert requests.get(f"{web}/api/sync-runs/{run_id}/failures", headers=auth).json() == {"items": [], "total": 0}
    assert failed_rows(clean) == []
    # Each student was stored once; the retried ones were asked 3 + 1 times (203: 3 + 3 + 1), the others once
    with clean.connect() as connection:
        synced = connection.exec_driver_sql("SELECT count(*) FROM students WHERE pembayaran IS NOT NULL").scalar_one()
    assert synced == 20
    assert {i: school_api.calls[i] for i in STUDENTS} == {
        i: (7 if i == 203 else 4 if i in DOWN else 1) for i in STUDENTS
    }
    # The audit trail behind the retried counter: 2 from the API, 4 from the command
    with clean.connect() as connection:
        audit = connection.exec_driver_sql(
            "SELECT source, sum(jobs) FROM failed_job_actions WHERE action = 'retry' GROUP BY source").all()
    assert dict(audit) == {"api": 2, "cli": 4}
    metrics = requests.get(web.metrics, timeout=5).text
    assert 'antrian_failed_jobs_retried_total{queue="sync-pembayaran"} 6.0' in metrics
    # The latest run's gauges, for the dashboard: all processed, none failed, not running
    for line in (f"antrian_sync_run_id {run_id}.0", "antrian_sync_run_students 20.0", "antrian_sync_run_processed 20.0",
                 "antrian_sync_run_failed 0.0", "antrian_sync_run_running 0.0"):
        assert line in metrics.splitlines(), line


def test_a_retried_email_is_sent_once_and_retry_all_covers_every_queue(
    clean, smtp_server, workers, start_web, auth
):
    web = start_web()
    workers("mailer")
    smtp_server.replies = ["550 5.1.1 mailbox unavailable"] * 3
    tour = create_tour(web, auth, quota=10)
    bookings = [book(web, auth, tour["id"], quantity=1).json() for _ in range(3)]
    rows = wait_for_failed(clean, 3, queue_name=EMAILS_QUEUE)
    assert smtp_server.messages == []

    # The server accepts again: one retried, then all the rest
    one = rows[0]
    assert requests.post(f"{web}/api/jobs/failed/{one['id']}/retry", headers=auth).status_code == 202
    wait_until(lambda: len(smtp_server.messages) == 1, timeout=30, what="the retried invoice")
    response = requests.post(f"{web}/api/jobs/failed/retry-all", headers=auth, timeout=10)
    assert response.status_code == 202 and response.json() == {"retried": 2, "queue": None}
    wait_until(lambda: len(smtp_server.messages) == 3, timeout=30, what="every invoice")
    settled()
    subjects = smtp_server.subjects()
    assert len(subjects) == 3
    assert all(sum(b["code"] in subject for subject in subjects) == 1 for b in bookings)
    assert failed_rows(clean) == [] and queue_depth(EMAILS_QUEUE) == 0
    # Retrying what is gone is a 404, and changes nothing
    response = requests.post(f"{web}/api/jobs/failed/{one['id']}/retry", headers=auth)
    assert response.status_code == 404 and response.json() == {"error": f"failed job {one['id']} not found"}

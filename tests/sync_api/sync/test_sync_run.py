"""A whole sync run through real processes: sync-api, sync-worker, the development school API."""

from __future__ import annotations

import requests

from antrian.cli.demo import seed_students
from tests.support import wait_until
from tests.sync_api.sync.helpers import assert_exact_outcome, expected_failures, wait_for_run

TRANSIENT, PERMANENT = 0.10, 0.02


def test_a_thousand_students_end_with_exact_counts(clean, start_school_api, start_worker, start_web, auth):
    # Given 1,000 students and a school API where 10% fail transiently and 2% for good
    seed_students(clean, 1000)
    upstream = start_school_api("--transient-rate", str(TRANSIENT), "--permanent-rate", str(PERMANENT))
    worker = start_worker(upstream, processes=1, threads=16)
    web = start_web()

    # When a run is started
    response = requests.post(f"{web}/api/sync-runs", headers=auth, timeout=5)
    assert response.status_code == 202
    started = response.json()
    assert started["status"] == "running" and started["total"] == 1000

    # Then it finishes with exactly the expected successes and failures, every pembayaran right
    run = wait_for_run(web, auth, started["id"], timeout=120)
    failures = expected_failures(1000, transient_rate=TRANSIENT, permanent_rate=PERMANENT)
    assert 5 < len(failures) < 60  # the development API really did refuse some
    assert_exact_outcome(clean, run, 1000, failures)

    listed = requests.get(f"{web}/api/sync-runs/{run['id']}/failures?limit=1000", headers=auth, timeout=5).json()
    assert listed["total"] == len(failures)
    assert {item["idperson"] for item in listed["items"]} == failures
    assert all("tidak ditemukan" in item["error"] for item in listed["items"])

    # And the metrics say the same
    metrics = requests.get(worker.metrics_url, timeout=5).text
    assert f'antrian_sync_students_total{{outcome="failed"}} {float(len(failures))}' in metrics
    assert f'antrian_sync_students_total{{outcome="success"}} {float(1000 - len(failures))}' in metrics
    assert 'antrian_upstream_request_seconds_count{outcome="http_5xx"}' in metrics
    assert "dramatiq_messages_total" in metrics
    web_metrics = requests.get(web.metrics, timeout=5).text
    assert 'antrian_http_requests_total{method="POST",route="/api/sync-runs",status="202"} 1.0' in web_metrics
    assert "antrian_http_request_duration_seconds_bucket" in web_metrics


def test_a_worker_killed_mid_run_loses_and_doubles_nothing(clean, start_school_api, start_worker, start_web, auth):
    # Given two sync-workers and a slow school API, so the run is still going when we strike
    seed_students(clean, 600)
    upstream = start_school_api("--latency-ms", "30", "--permanent-rate", str(PERMANENT))
    doomed = start_worker(upstream, processes=1, threads=8)
    survivor = start_worker(upstream, processes=1, threads=8)
    web = start_web()
    run_id = requests.post(f"{web}/api/sync-runs", headers=auth, timeout=5).json()["id"]

    # When one worker is killed with SIGKILL while messages are in flight
    wait_until(
        lambda: requests.get(f"{web}/api/sync-runs/{run_id}", headers=auth, timeout=5).json()["processed"] >= 150,
        timeout=60, what="150 students processed",
    )
    doomed.kill()
    mid = requests.get(f"{web}/api/sync-runs/{run_id}", headers=auth, timeout=5).json()
    assert mid["isRunning"], "the run finished before the kill; nothing was proven"

    # Then the survivor finishes the run with exact counts: nothing lost, nothing counted twice
    run = wait_for_run(web, auth, run_id, timeout=120)
    assert_exact_outcome(clean, run, 600, expected_failures(600, transient_rate=0, permanent_rate=PERMANENT))
    assert survivor.process.poll() is None

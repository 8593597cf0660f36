"""PostgreSQL refusing new connections, for real, on a private instance: its ``max_connections`` all held.

The test holds every connection slot of a private PostgreSQL (``max_connections`` 20), taking each slot the processes'
idle pooled connections free as it ends them (as a server's idle-session timeout would; a transaction is never
cut), so that each process must open a new connection and is refused ("too many clients"). The API
answers a clear 503 at once; sync jobs and invoices in flight wait and retry; once the slots are released every
student of the run and every invoice completes exactly once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
import requests
from sqlalchemy import text

from antrian.cli.demo import seed_students
from tests.nodes import PostgresInstance
from tests.support import outbox_drained, purge_queues, queue_counts, wait_until
from tests.sync_api.bookings.helpers import book, create_tour, quota
from tests.sync_api.sync.helpers import assert_exact_outcome, wait_for_run

STUDENTS = 400
BOOKINGS = 4
#: "Quickly": a refused request answers well within this (a hang or a connect timeout would not).
REFUSAL_BOUND_S = 5.0
EMAIL_QUEUES = ("emails", "emails.DQ", "emails.XQ")


@contextmanager
def every_connection_held(instance: PostgresInstance, database: str = "antrian") -> Iterator[psycopg.Connection]:
    """Hold every connection slot of ``instance`` until the block ends; yields one of them for the test's reads.

    Others' idle connections are ended (``pg_terminate_backend``; one in a transaction is left to finish it) and the
    slots they free taken, until the test holds all ``max_connections``: then every process that needs a
    connection must open one, and is refused.
    """
    held: list[psycopg.Connection] = []

    def fill() -> None:
        while len(held) < instance.max_connections:
            try:
                held.append(psycopg.connect(f"host=127.0.0.1 port={instance.port} user=postgres dbname={database}",
                                            autocommit=True, connect_timeout=5))
            except psycopg.OperationalError as exc:
                if "too many clients" not in str(exc):
                    raise
                return

    def all_held() -> bool:
        fill()
        if len(held) < instance.max_connections:
            ours = [connection.info.backend_pid for connection in held]
            held[0].execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE backend_type = 'client backend' AND state = 'idle' AND NOT pid = ANY(%s)", (ours,)
            )
        return len(held) == instance.max_connections

    try:
        wait_until(all_held, timeout=30, interval=0.05, what="every connection slot held by the test")
        yield held[0]
    finally:
        for connection in held:
            connection.close()


def emails_settled() -> bool:
    counts = queue_counts()
    return all(counts.get(queue, (0, 0)) == (0, 0) for queue in EMAIL_QUEUES)


@pytest.fixture
def broker_vhost(infrastructure) -> None:
    """The session's vhost on the machine's RabbitMQ, emptied (this test breaks only its private PostgreSQL)."""
    purge_queues()


def test_a_full_connection_table_answers_503_at_once_and_loses_nothing(
    private_postgres, private_engine, broker_vhost, start_school_api, start_web, start_worker, start_dramatiq,
    smtp_server, auth,
):
    engine = private_engine
    seed_students(engine, STUDENTS)
    database = {"DATABASE_URL": private_postgres.url("antrian")}
    web = start_web(**database)
    worker = start_worker(start_school_api("--latency-ms", "20"), threads=4, **database)
    start_dramatiq("mailer", threads=2, **smtp_server.env(), **database)
    tour = create_tour(web, auth, quota=50)

    # Given invoices and a sync run in flight
    codes = []
    for _ in range(BOOKINGS):
        response = book(web, auth, tour["id"], quantity=1)
        assert response.status_code == 201, response.text
        codes.append(response.json()["code"])
    response = requests.post(f"{web}/api/sync-runs", headers=auth, timeout=30)
    assert response.status_code == 202, response.text
    run_id = response.json()["id"]

    # when PostgreSQL refuses every new connection,
    with every_connection_held(private_postgres) as held:
        # (the run is still going: its jobs are in flight when the fault comes)
        assert held.execute("SELECT status FROM sync_runs WHERE id = %s", (run_id,)).fetchone() == ("running",)
        # then the API answers a clear 503 at once, for a booking, a new sync run and a run's progress alike
        for method, path, body in (("post", "/api/bookings", {"tour_id": tour["id"], "quantity": 1,
                                                               "customer_name": "Sari", "customer_email": "s@x.id"}),
                                   ("post", "/api/sync-runs", None),
                                   ("get", f"/api/sync-runs/{run_id}", None)):
            started = time.monotonic()
            response = requests.request(method, f"{web}{path}", headers=auth, json=body, timeout=60)
            elapsed = time.monotonic() - started
            assert response.status_code == 503, (path, response.status_code, response.text)
            assert response.json().get("error"), response.text
            assert elapsed < REFUSAL_BOUND_S, f"{method.upper()} {path} took {elapsed:.1f}s"
        # and the sync workers, refused too, wait and retry rather than failing students.
        wait_until(lambda: "database unreachable" in worker.log(), timeout=30, what="the sync worker refused")
        assert held.execute("SELECT count(*) FROM sync_items WHERE status = 'failed'").fetchone() == (0,)

    # Once connections are released, the run finishes with exact counts
    run = wait_for_run(web, auth, run_id, timeout=90)
    assert_exact_outcome(engine, run, STUDENTS, set())
    # and every invoice of a booking made goes out exactly once; the refused booking made nothing.
    outbox_drained(engine, timeout=60)
    wait_until(lambda: len(smtp_server.messages) >= BOOKINGS, timeout=60, what="every invoice at the SMTP server")
    wait_until(emails_settled, timeout=60, interval=0.3, what="the emails queues settled")
    sent = Counter(code for code in codes for subject in smtp_server.subjects() if code in subject)
    assert sent == Counter(codes), smtp_server.subjects()
    assert len(smtp_server.messages) == BOOKINGS
    assert quota(engine, tour["id"]) == 50 - BOOKINGS
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM bookings")).scalar_one() == BOOKINGS
        assert connection.execute(text("SELECT count(*) FROM sync_runs")).scalar_one() == 1
        assert connection.execute(text("SELECT count(*) FROM failed_jobs")).scalar_one() == 0

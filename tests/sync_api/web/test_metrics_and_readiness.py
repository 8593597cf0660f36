"""sync-api's ``/metrics`` on its own METRICS_PORT (gunicorn's master), cheap scrapes, and a ``/readyz`` that says
only which dependency is down.

Real processes against the real PostgreSQL and RabbitMQ, except the two first tests (the app in process).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
from dataclasses import replace

import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event, text

from antrian.config import load_settings
from antrian.db.engine import make_engine
from sync_api.web.state_metrics import Coalesced, DatabaseStateCollector, QueueStatsCollector
from tests.proxy import FreezableProxy
from tests.support import BROKER_URL, DATABASE_URL, free_port, wait_until

#: What a readiness answer must never show: where the dependencies are, who logs in, or the driver's words.
LEAKS = ("127.0.0.1", "localhost", "postgres", "psycopg", "amqp", "guest", "refused", "connect", "5432", "5672",
         "timeout", "antrian_test", "could not", "failed")

#: State metrics a scrape reads from PostgreSQL and RabbitMQ.
STATE_METRICS = ("antrian_outbox_backlog", "antrian_payments_refund_due", "antrian_sync_run_idle_seconds",
                 "antrian_sync_run_running", "antrian_queue_paused", "antrian_queue_messages")


# --------------------------------------------------------------------------- the app in process (fast)


@pytest.mark.fast
def test_the_api_serves_no_metrics_and_documents_none(app, client):
    # (the OpenAPI document lists exactly the app's routes: tests/sync_api/web/test_openapi.py)
    assert client.get("/metrics").status_code == 404
    assert {rule.rule for rule in app.url_map.iter_rules()} >= {"/healthz", "/readyz"}
    assert "/metrics" not in {rule.rule for rule in app.url_map.iter_rules()}


@pytest.mark.fast
def test_readiness_names_what_is_down_and_logs_why(client, caplog):
    # The fast tests' app points at a database and a broker that do not exist
    with caplog.at_level(logging.WARNING, logger="sync_api.web.health"):
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable", "database": "unreachable", "broker": "unreachable",
                                   "error": "database and broker unreachable"}
    assert not [leak for leak in LEAKS if leak in response.get_data(as_text=True).lower()]
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "readiness: database unreachable: cannot reach the database at postgresql+psycopg://" in logged
    assert "readiness: broker unreachable: cannot reach the broker at amqp://127.0.0.1:" in logged


# --------------------------------------------------------------------------- real processes


def metric_values(page: str) -> dict[tuple[str, tuple], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(page) for sample in family.samples}


def healthz_served(page: str) -> float:
    return sum(value for (name, labels), value in metric_values(page).items()
               if name == "antrian_http_requests_total" and ("route", "/healthz") in labels)


def gunicorn_workers(master: int) -> list[int]:
    return sorted(child.pid for child in psutil.Process(master).children())


def test_metrics_are_on_their_own_port_for_every_worker_without_a_token(clean, start_web, services):
    web = start_web()
    master = services[-1].process.pid
    workers = gunicorn_workers(master)
    assert len(workers) == 2

    # /metrics is not on the API's port, and nothing but /metrics is on the metrics port
    assert requests.get(f"{web}/metrics", timeout=5).status_code == 404
    assert requests.get(web.metrics.replace("/metrics", "/healthz"), timeout=5).status_code == 404
    assert requests.post(web.metrics, timeout=5).status_code == 405

    # Requests served by both workers at once all show on one page, scraped without a token
    before = healthz_served(requests.get(web.metrics, timeout=5).text)

    def hammer() -> None:
        for _ in range(20):
            assert requests.get(f"{web}/healthz", timeout=5).status_code == 200

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    response = requests.get(web.metrics, timeout=5)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    assert healthz_served(response.text) == before + 160
    names = {name for name, _labels in metric_values(response.text)}
    assert set(STATE_METRICS) <= names, set(STATE_METRICS) - names
    assert requests.get(web.metrics, headers={"Accept-Encoding": "gzip"}, timeout=5).headers.get(
        "Content-Encoding") == "gzip"

    # A worker that dies is replaced: the new one (forked by the master after its scrapes) serves, and the master's
    # next scrape still reads fresh state through its own connection
    os.kill(workers[0], signal.SIGKILL)
    wait_until(lambda: (now := gunicorn_workers(master)) and len(now) == 2 and workers[0] not in now, timeout=30,
               what="gunicorn to replace the killed worker")
    for _ in range(10):
        assert requests.get(f"{web}/healthz", timeout=5).status_code == 200
    with clean.begin() as connection:
        connection.execute(text(
            "INSERT INTO failed_jobs (message_id, queue_name, actor_name, args, kwargs, options, attempts, exception)"
            " VALUES ('m-1', 'emails', 'send_invoice_email', '[]', '{}', '{}', 3, 'E: x')"))
    page = requests.get(web.metrics, timeout=5).text
    assert metric_values(page)[("antrian_failed_jobs", (("actor", "send_invoice_email"), ("queue", "emails")))] == 1
    assert healthz_served(page) >= before + 160 + 10  # the dead worker's counts are kept, the new one's added


@pytest.mark.parametrize("down", ["database", "broker"])
def test_readiness_says_only_which_dependency_is_down(clean, start_web, services, down):
    # Given sync-api reaching the dependency through a proxy that then goes away
    proxy = FreezableProxy(5432 if down == "database" else 5672)
    env = ({"DATABASE_URL": DATABASE_URL.replace(":5432/", f":{proxy.port}/")} if down == "database"
           else {"BROKER_URL": BROKER_URL.replace(":5672/", f":{proxy.port}/")})
    try:
        web = start_web(**env)
        assert requests.get(f"{web}/readyz", timeout=10).json() == {"status": "ok", "database": "ok", "broker": "ok"}
        proxy.close()

        # Then /readyz is 503 naming it, and nothing more (a broker success stands for BROKER_OK_FOR_S)
        def answer():
            response = requests.get(f"{web}/readyz", timeout=10)
            return [response] if response.status_code == 503 else None  # (a 503 Response is falsy)

        [response] = wait_until(answer, timeout=30, interval=0.5, what=f"/readyz to see the {down} gone")
        other = "broker" if down == "database" else "database"
        assert response.json() == {"status": "unavailable", down: "unreachable", other: "ok",
                                   "error": f"{down} unreachable"}
        assert not [leak for leak in LEAKS if leak in response.text.lower()], response.text
        assert requests.get(f"{web}/healthz", timeout=5).status_code == 200
        # And the reason is in the log, with where it tried (its URL without a password)
        log = services[-1].log()
        where = (f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/" if down == "database"
                 else f"amqp://127.0.0.1:{proxy.port}/")
        assert f"readiness: {down} unreachable: cannot reach the {down} at {where}" in log, log[-3000:]
    finally:
        proxy.close()


def test_metrics_port_taken_is_one_clear_line(clean, start_web, services):
    taken = free_port()
    with socket.create_server(("127.0.0.1", taken)):
        with pytest.raises(AssertionError, match="exited with 2") as failed:
            start_web(METRICS_PORT=str(taken))
    log = str(failed.value)
    assert f"sync-api: cannot serve /metrics on 127.0.0.1:{taken} (METRICS_PORT): Address already in use" in log
    assert "Traceback" not in log


# --------------------------------------------------------------------------- what a scrape costs


PAYMENTS = 100_000
RUN_ITEMS = 50_000


def fill_big_tables(engine) -> None:
    """100,000 payments (3 of them refund_due) and a running sync run of 50,000 students, all but one done."""
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO tours (id, name, quota, price, starts_at) VALUES (1, 'T', 10, 100, now() + interval '1 day')"))
        connection.execute(text(
            """INSERT INTO bookings (id, code, tour_id, customer_name, customer_email, quantity, total_amount,
                                     status, expires_at)
               SELECT b, 'B' || b, 1, 'N', 'n@example.com', 1, 100, CASE WHEN b <= 3 THEN 'expired' ELSE 'paid' END,
                      now() FROM generate_series(1, 1000) AS b"""))
        connection.execute(text(
            """INSERT INTO payments (booking_id, order_id, transaction_id, transaction_status, status_code,
                                     gross_amount, outcome, payload)
               SELECT 1 + p % 1000, 'B' || (1 + p % 1000), 't' || p, 'settlement', '200', 100,
                      CASE WHEN p <= 3 THEN 'refund_due' ELSE 'paid' END, '{}'
               FROM generate_series(1, :n) AS p"""), {"n": PAYMENTS})
        connection.execute(text("INSERT INTO sync_runs (id, total, status, started_at)"
                                " VALUES (1, :n, 'running', now() - interval '1 day')"), {"n": RUN_ITEMS})
        connection.execute(text(
            """INSERT INTO sync_items (run_id, idperson, status, finished_at)
               SELECT 1, i, CASE WHEN i = 1 THEN 'pending' ELSE 'success' END,
                      CASE WHEN i = 1 THEN NULL ELSE now() - make_interval(secs => i) END
               FROM generate_series(1, :n) AS i"""), {"n": RUN_ITEMS})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE payments, bookings, sync_items, sync_runs"))


def plan_nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def test_a_scrape_reads_index_entries_not_the_big_tables(clean):
    # Given 100,000 payments and a running run of 50,000 students
    fill_big_tables(clean)
    engine = make_engine(DATABASE_URL, pool_size=1, max_overflow=0)
    statements: list[tuple[str, object]] = []
    event.listen(engine, "before_cursor_execute",
                 lambda conn, cursor, statement, parameters, context, many: statements.append((statement, parameters)))
    settings = replace(load_settings({}), database_url=DATABASE_URL, broker_url=BROKER_URL)

    # When the master's collectors are scraped
    metrics = {family.name: family for family in
               Coalesced(DatabaseStateCollector(engine), QueueStatsCollector(settings, engine)).collect()}
    assert metrics["antrian_payments_refund_due"].samples[0].value == 3
    assert metrics["antrian_payments_refund_due_oldest_age_seconds"].samples[0].value >= 0
    assert metrics["antrian_sync_run_idle_seconds"].samples[0].value >= 1
    assert metrics["antrian_sync_run_students"].samples[0].value == RUN_ITEMS
    engine.dispose()

    # Then it runs a bounded number of statements, and none reads more than a few rows of either big table
    reads = [s for s in statements if s[0].lstrip().upper().startswith(("SELECT", "WITH"))]
    assert 0 < len(reads) <= 12, [s for s, _ in reads]
    with clean.connect() as connection:
        for statement, parameters in reads:
            plan = connection.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", parameters).scalar_one()
            plan = plan if isinstance(plan, list) else json.loads(plan)
            for node in plan_nodes(plan[0]["Plan"]):
                if node.get("Relation Name") in ("payments", "sync_items"):
                    assert node["Node Type"] != "Seq Scan", (statement, node)
                    read = (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * node["Actual Loops"]
                    assert read <= 10, (statement, node["Node Type"], node.get("Index Name"), read)


@pytest.mark.fast
def test_concurrent_scrapes_share_one_read_never_an_older_one():
    reads = []
    release = threading.Event()

    class Slow:
        def collect(self):
            reads.append(1)
            release.wait(5)
            return [len(reads)]

    state = Coalesced(Slow())
    first = threading.Thread(target=state.collect)
    first.start()
    wait_until(lambda: reads, timeout=5)
    # Five scrapes arrive while the first read is in flight: they wait for it, then share one read of their own
    results = []
    waiting = [threading.Thread(target=lambda: results.append(state.collect())) for _ in range(5)]
    for thread in waiting:
        thread.start()
    release.set()
    first.join()
    for thread in waiting:
        thread.join()
    assert len(reads) == 2 and results == [[2]] * 5

"""Part (m): what one scrape of sync-api's ``/metrics`` costs with a big ``payments`` table.

A real sync-api (its defaults: gunicorn, 2 workers x 8 threads; ``/metrics`` served by the master on its own
``METRICS_PORT``) over ``payments`` payments (3 of them ``refund_due``) and a running sync run of ``run_items``
students, all but one with an outcome. ``scrapes`` scrapes of ``/metrics`` one after the other (a new connection
each, as Prometheus' scrape of a server that closes them), after 5 not measured; the peer, in the same run and
the same way: ``GET /healthz`` on the API's port. Each scrape reads PostgreSQL (about ten statements) and
RabbitMQ's management API. Then the same scrapes with migration 0012's indexes dropped, for the contrast (they are
created again afterwards). Target: a scrape's median under 50 ms with 100,000 payments (issue 16).
"""

from __future__ import annotations

import time

import requests
from sqlalchemy import Engine, text

from . import common

TARGET_MS = 50.0
#: sync-api's token (at least 32 characters); no request of this part needs it.
TOKEN = "bench-scrape-token-0123456789-0123456789"
WARMUP = 5
#: Migration 0012's indexes, as it creates them.
INDEXES = {
    "payments_refund_due": "CREATE INDEX payments_refund_due ON payments (booking_id) INCLUDE (received_at)"
                           " WHERE outcome = 'refund_due'",
    "sync_items_run_finished": "CREATE INDEX sync_items_run_finished ON sync_items"
                               " (run_id, finished_at DESC NULLS LAST)",
    "failed_jobs_queue_actor": "CREATE INDEX failed_jobs_queue_actor ON failed_jobs (queue_name, actor_name)",
}


def run(engine: Engine, *, payments: int, run_items: int, scrapes: int) -> dict:
    common.clear_bookings(engine)
    common.clear_data(engine)
    try:
        _fill(engine, payments=payments, run_items=run_items)
        metrics_port = common.free_port()
        web = common.start_sync_api(METRICS_PORT=str(metrics_port), API_TOKEN=TOKEN)
        metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        page = requests.get(metrics, timeout=10).text
        if "antrian_payments_refund_due 3.0" not in page:
            raise RuntimeError("the scrape does not show the 3 refund_due payments")
        indexed = _timed(metrics, scrapes)
        healthz = _timed(f"{web}/healthz", scrapes)
        with engine.begin() as connection:
            for name in INDEXES:
                connection.execute(text(f"DROP INDEX {name}"))
        common.vacuum(engine, "payments", "sync_items", "failed_jobs")
        try:
            unindexed = _timed(metrics, scrapes)
        finally:
            with engine.begin() as connection:
                for create in INDEXES.values():
                    connection.execute(text(create))
    finally:
        common.stop_all()
        common.clear_bookings(engine)
        common.clear_data(engine)
    return {"payments": payments, "run_items": run_items, "scrapes": scrapes, "scrape": indexed,
            "healthz": healthz, "scrape_without_indexes": unindexed, "target_ms": TARGET_MS,
            "ok": indexed["p50_ms"] < TARGET_MS}


def _fill(engine: Engine, *, payments: int, run_items: int) -> None:
    started = time.perf_counter()
    with engine.begin() as connection:
        tour = connection.execute(text(
            "INSERT INTO tours (name, quota, price, starts_at) VALUES ('Bench scrape tour', 10, 100,"
            " now() + interval '1 day') RETURNING id")).scalar_one()
        connection.execute(text(
            """INSERT INTO bookings (code, tour_id, customer_name, customer_email, quantity, total_amount, status,
                                     expires_at)
               SELECT 'SCRAPE-' || b, :tour, 'Bench', 'bench@example.com', 1, 100,
                      CASE WHEN b <= 3 THEN 'expired' ELSE 'paid' END, now()
               FROM generate_series(1, 1000) AS b"""), {"tour": tour})
        connection.execute(text(
            """INSERT INTO payments (booking_id, order_id, transaction_id, transaction_status, status_code,
                                     gross_amount, outcome, payload)
               SELECT b.id, b.code, 't' || p, 'settlement', '200', 100,
                      CASE WHEN p <= 3 THEN 'refund_due' ELSE 'paid' END, '{}'
               FROM generate_series(1, :n) AS p
               JOIN bookings b ON b.code = 'SCRAPE-' || (1 + (p - 1) % 1000)"""), {"n": payments})
        run_id = connection.execute(text(
            "INSERT INTO sync_runs (total, status, started_at) VALUES (:n, 'running', now() - interval '1 hour')"
            " RETURNING id"), {"n": run_items}).scalar_one()
        connection.execute(text(
            """INSERT INTO sync_items (run_id, idperson, status, finished_at)
               SELECT :run, i, CASE WHEN i = 1 THEN 'pending' ELSE 'success' END,
                      CASE WHEN i = 1 THEN NULL ELSE now() - make_interval(secs => i % 3000) END
               FROM generate_series(1, :n) AS i"""), {"run": run_id, "n": run_items})
    common.vacuum(engine, "payments", "bookings", "sync_items", "sync_runs")
    common.log(f"(m) {payments} payments and a run of {run_items} students in {time.perf_counter() - started:.1f}s")


def _timed(url: str, count: int) -> dict:
    for _ in range(WARMUP):
        requests.get(url, timeout=10).raise_for_status()
    took = []
    for _ in range(count):
        started = time.perf_counter()
        requests.get(url, timeout=10).raise_for_status()
        took.append((time.perf_counter() - started) * 1000)
    took.sort()
    return {"p50_ms": round(common.median(took), 2), "p95_ms": round(took[int(len(took) * 0.95) - 1], 2),
            "max_ms": round(took[-1], 2)}


def rows(m: dict, add) -> None:
    if "scrape" not in m:
        return
    setup = f"{m['payments']} payments, a running run of {m['run_items']} students, {m['scrapes']} scrapes"

    def shown(result: dict) -> str:
        return f"{result['p50_ms']} / {result['p95_ms']} / {result['max_ms']} ms"

    add("m", f"sync-api /metrics scrape p50 / p95 / max ({setup})", shown(m["scrape"]),
        f"p50 < {m['target_ms']:g} ms", m["ok"])
    add("m", "  peer: GET /healthz on the API's port, same way", shown(m["healthz"]))
    add("m", "  the same scrape with migration 0012's indexes dropped", shown(m["scrape_without_indexes"]))

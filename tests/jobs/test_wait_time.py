"""Wait time: how long a message waited for a worker, from its enqueue or (delayed, retried) its due time.

The arithmetic (fast): the middleware's start time, its buckets and the quantiles read from them. Then the stored
per-minute counts against PostgreSQL, and the whole chain with real processes: with the mailer stopped for 10 s,
the next invoice's wait is at least 10 s on the mailer's /metrics and in GET /api/queues.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import dramatiq
import pytest
import requests
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import text

from antrian.config import load_settings
from antrian.jobs import waits
from antrian.runtime.wait_time import DUE_OPTION, MeasureWait, waited_ms
from tests.support import metric, outbox_drained, wait_until
from tests.sync_api.bookings.helpers import book, create_tour

# ------------------------------------------------------------------------------------------- arithmetic


def message(timestamp_ms: int, **options) -> dramatiq.Message:
    return dramatiq.Message(queue_name="emails", actor_name="send_invoice_email", args=(1,), kwargs={},
                            options=options, message_timestamp=timestamp_ms)


@pytest.mark.fast
def test_a_message_waits_from_its_enqueue_and_a_delayed_one_from_its_due_time():
    assert waited_ms(message(1_000), 3_500) == 2_500
    # Delayed (or a retry's backoff): enqueued at 1 s, due at 61 s, started at 61.2 s: it waited 200 ms, not 60.2 s
    assert waited_ms(message(1_000, eta=61_000), 61_200) == 200
    # Once due, Dramatiq drops the eta; the middleware kept it (a retry after an earlier delay: the later wins)
    assert waited_ms(message(1_000, **{DUE_OPTION: 61_000}), 61_200) == 200
    assert waited_ms(message(1_000, eta=90_000, **{DUE_OPTION: 61_000}), 90_050) == 50
    # A failed job retried by an operator has a fresh timestamp, later than an old due time
    assert waited_ms(message(100_000, **{DUE_OPTION: 61_000}), 100_300) == 300
    # Another host's clock ahead: no negative wait; junk options are ignored
    assert waited_ms(message(5_000), 4_000) == 0
    assert waited_ms(message(1_000, eta="soon", **{DUE_OPTION: True}), 2_000) == 1_000


@pytest.mark.fast
def test_waits_fall_in_buckets_from_5_ms_to_an_hour():
    assert waits.BUCKETS[0] == 0.005 and waits.BUCKETS[-1] == 3600 and 120 in waits.BUCKETS
    assert list(waits.BUCKETS) == sorted(set(waits.BUCKETS))
    assert waits.upper_bound(0) == 0.005
    assert waits.upper_bound(0.005) == 0.005  # le: inclusive, as Prometheus
    assert waits.upper_bound(0.0051) == 0.01
    assert waits.upper_bound(10.3) == 15
    assert waits.upper_bound(3600.1) == waits.INF


@pytest.mark.fast
def test_quantiles_are_interpolated_within_buckets_as_histogram_quantile_does():
    assert waits.quantile(0.95, {}) is None
    assert waits.quantile(0.5, {0.005: 0}) is None
    # One message that waited 10-15 s
    assert waits.quantile(0.5, {15.0: 1}) == pytest.approx(12.5)
    assert waits.quantile(0.95, {15.0: 1}) == pytest.approx(14.75)
    # 90 fast ones (0.1-0.25 s) and 10 slow ones (60-120 s): the median is fast, the p95 slow
    counts = {0.25: 90, 120.0: 10, 0.1: 0}
    assert waits.quantile(0.5, counts) == pytest.approx(0.1 + 0.15 * 50 / 90)
    assert waits.quantile(0.95, counts) == pytest.approx(60 + 60 * 5 / 10)
    # Past the last bound: the highest finite bound, as Prometheus
    assert waits.quantile(0.95, {1.0: 1, waits.INF: 9}) == 3600
    assert waits.quantile(0.95, {waits.INF: 3}) == 3600
    summary = waits.summarise({0.25: 90, 120.0: 10})
    assert (summary.p95_seconds, summary.messages) == (90.0, 100)


class Recorder(MeasureWait):
    """The middleware with its observations kept in a list, and no database."""

    def __init__(self) -> None:
        super().__init__(load_settings(), flush_interval_s=3600)
        self.seen: list[tuple[str, str, float]] = []

    def observe(self, queue: str, actor: str, seconds: float, *, now_ms: int) -> None:
        self.seen.append((queue, actor, seconds))
        super().observe(queue, actor, seconds, now_ms=now_ms)

    def flush(self) -> int:
        return 0


@pytest.mark.fast
def test_in_a_worker_a_delayed_message_is_measured_from_its_due_time_on_its_canonical_queue():
    recorder = Recorder()
    broker = StubBroker(middleware=[recorder])
    broker.emit_after("process_boot")
    done = []

    @dramatiq.actor(broker=broker, queue_name="emails", actor_name="wait_probe")
    def wait_probe(n):
        done.append(n)

    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        wait_probe.send(1)
        wait_probe.send_with_options(args=(2,), delay=1_500)  # through emails.DQ, held 1.5 s, then back on emails
        wait_until(lambda: len(done) == 2, timeout=10, what="both messages")
    finally:
        worker.stop()
    assert [(queue, actor) for queue, actor, _ in recorder.seen] == [("emails", "wait_probe")] * 2
    now, delayed = (seconds for _, _, seconds in recorder.seen)
    assert now < 1.0
    assert delayed < 1.0, f"measured from its enqueue ({delayed} s), not its due time"
    assert sum(recorder.pending().values()) == 2
    assert {queue for _minute, queue, _le in recorder.pending()} == {"emails"}


# ----------------------------------------------------------------------------------------- the stored counts

def test_counts_add_up_across_flushes_and_only_the_window_is_summarised(clean):
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    old = now - timedelta(minutes=waits.WINDOW_MINUTES + 1)
    with clean.begin() as connection:
        waits.add(connection, {(now, "emails", 15.0): 1, (now, "emails", 0.25): 2})
        waits.add(connection, {(now, "emails", 0.25): 1, (now, "booking-expiry", waits.INF): 1})
        waits.add(connection, {(old, "emails", 3600.0): 50, (now - timedelta(days=2), "emails", 1.0): 7})
    with clean.connect() as connection:
        stored = connection.execute(text(
            "SELECT count FROM message_wait_counts WHERE queue_name = 'emails' AND le = 0.25")).scalar_one()
        summaries = waits.summaries(connection)
    assert stored == 3
    assert summaries["emails"] == waits.WaitSummary(p50_seconds=0.2, p95_seconds=14.0, messages=4)
    assert summaries["booking-expiry"] == waits.WaitSummary(p50_seconds=3600.0, p95_seconds=3600.0, messages=1)
    with clean.begin() as connection:
        assert waits.prune(connection) == 1
        assert connection.execute(text("SELECT count(*) FROM message_wait_counts")).scalar_one() == 4


# ------------------------------------------------------------------------------------------ real processes

def test_with_the_mailer_stopped_for_10_s_the_next_invoice_waited_at_least_10_s(
    clean, start_web, start_dramatiq, smtp_server, auth
):
    # Given sync-api and a mailer that sends a first invoice at once
    web = start_web()
    mailer = start_dramatiq("mailer", threads=2, **smtp_server.env())
    tour = create_tour(web, auth, quota=10)
    assert book(web, auth, tour["id"], quantity=1).status_code == 201
    wait_until(lambda: len(smtp_server.messages) == 1, timeout=30, what="the first invoice")
    first = metric(mailer.metrics_url, "antrian_message_wait_seconds_sum", queue="emails", actor="send_invoice_email")
    assert metric(mailer.metrics_url, "antrian_message_wait_seconds_count", queue="emails") == 1
    assert first < 5, f"the first invoice waited {first} s with the mailer up"

    # When the mailer is stopped, a booking's invoice is published, and the mailer comes back 10 s later
    mailer.stop()
    booked_at = time.monotonic()
    assert book(web, auth, tour["id"], quantity=1).status_code == 201
    outbox_drained(clean)
    time.sleep(10)
    mailer.start(timeout=60)
    wait_until(lambda: len(smtp_server.messages) == 2, timeout=30, what="the second invoice")
    longest = time.monotonic() - booked_at

    # Then the mailer's histogram (a fresh process: this invoice alone) has it at 10 s or more, and no longer
    # than it really took; its bucket is above the 10 s bound
    labels = {"queue": "emails", "actor": "send_invoice_email"}
    assert metric(mailer.metrics_url, "antrian_message_wait_seconds_count", **labels) == 1
    waited = metric(mailer.metrics_url, "antrian_message_wait_seconds_sum", **labels)
    assert 10 <= waited <= longest + 1, (waited, longest)
    assert metric(mailer.metrics_url, "antrian_message_wait_seconds_bucket", le="10.0", **labels) == 0
    assert metric(mailer.metrics_url, "antrian_message_wait_seconds_bucket", le="+Inf", **labels) == 1
    print(f"first invoice waited {first:.3f} s; with the mailer stopped for 10 s: {waited:.3f} s")

    # And GET /api/queues, read by sync-api from what both mailer processes stored, has the slow one as p95
    def emails() -> dict:
        items = requests.get(f"{web}/api/queues", headers=auth, timeout=10).json()["items"]
        return next(item for item in items if item["name"] == "emails")

    wait_until(lambda: emails()["wait_messages"] == 2, timeout=30, what="both waits stored")
    queue = emails()
    assert queue["wait_p95_seconds"] >= 10, queue
    assert queue["wait_p50_seconds"] < 10, queue
    others = requests.get(f"{web}/api/queues", headers=auth, timeout=10).json()["items"]
    assert all(item["wait_p95_seconds"] is None and item["wait_messages"] == 0
               for item in others if item["name"] != "emails")
    print(f"/api/queues emails: p50 {queue['wait_p50_seconds']} s, p95 {queue['wait_p95_seconds']} s")

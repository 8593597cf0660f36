"""antrian on a 3-node RabbitMQ cluster with quorum queues (the default QUEUE_TYPE): every queue is quorum, a
sync run keeps exact counts while the node leading its queue is stopped and started again, bookings made while a
node is down each get one invoice, and a retry-all across a node stop loses and doubles nothing.

Real processes (sync-api, sync-worker, mailer) with ``BROKER_URL`` naming all three nodes.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter

import pika
import pytest
import requests
from sqlalchemy import text

from antrian.amqp.connection import connection_parameters
from antrian.cli.demo import seed_students
from antrian.messages import QUEUES, SEND_INVOICE_EMAIL
from tests.jobs.helpers import failed_rows, store
from tests.support import BIN, ROOT, base_env, outbox_drained, wait_until
from tests.sync_api.bookings.helpers import book, create_tour
from tests.sync_api.sync.helpers import assert_exact_outcome, wait_for_run

pytestmark = pytest.mark.cluster


@pytest.fixture
def on_cluster(cluster, cluster_vhost):
    """The settings that point an antrian process at the cluster's three nodes, in this test's vhost."""
    return {"BROKER_URL": cluster.url(cluster_vhost), "RABBITMQ_MANAGEMENT_URL": cluster.management_url()}


def test_a_sync_run_keeps_exact_counts_while_the_node_leading_its_queue_stops_and_comes_back(
    clean, cluster, cluster_vhost, on_cluster, start_school_api, start_worker, start_web, auth
):
    # Given 5,000 students, two sync-workers and sync-api, all given the three nodes
    seed_students(clean, 5000)
    upstream = start_school_api("--latency-ms", "50")  # 2 x 8 threads: about 300 students a second
    start_worker(upstream, processes=1, threads=8, **on_cluster)
    start_worker(upstream, processes=1, threads=8, **on_cluster)
    web = start_web(**on_cluster)
    types = cluster.queue_types(cluster_vhost)
    assert {name: types.get(name) for q in QUEUES for name in (q, f"{q}.DQ", f"{q}.XQ")} == {
        name: "quorum" for q in QUEUES for name in (q, f"{q}.DQ", f"{q}.XQ")}, types
    assert cluster.members("sync-pembayaran", cluster_vhost) == set(cluster.names)

    # When a run is going and the node leading sync-pembayaran is stopped, then started again
    run_id = requests.post(f"{web}/api/sync-runs", headers=auth, timeout=10).json()["id"]

    def processed() -> int:
        return requests.get(f"{web}/api/sync-runs/{run_id}", headers=auth, timeout=10).json()["processed"]

    wait_until(lambda: processed() >= 300, timeout=120, what="the run's first students")
    leader = cluster.leader("sync-pembayaran", cluster_vhost)
    cluster.stop_node(leader)
    at_stop = processed()
    assert at_stop < 4000, f"the run was nearly over ({at_stop}) when its leader stopped: nothing proven"
    new_leader = cluster.await_leader("sync-pembayaran", cluster_vhost, other_than=leader)
    wait_until(lambda: processed() >= at_stop + 300, timeout=120, what="the run going on without its leader")
    cluster.start_node(leader)

    # Then it finishes with every student counted once
    run = wait_for_run(web, auth, run_id, timeout=300)
    assert_exact_outcome(clean, run, 5000, set())
    print(f"leader {leader} stopped at {at_stop} processed; {new_leader} led on; run finished exact")


def test_bookings_made_while_a_node_is_down_each_get_one_invoice_and_a_retry_all_across_a_node_stop_is_exact(
    clean, cluster, cluster_vhost, on_cluster, start_web, start_dramatiq, smtp_server, auth
):
    # Given sync-api and a mailer on the cluster, and the first node (the first in BROKER_URL) down
    web = start_web(**on_cluster)
    start_dramatiq("mailer", threads=4, **smtp_server.env(), **on_cluster)
    tour = create_tour(web, auth, quota=200)
    first = cluster.names[0]
    cluster.stop_node(first)

    # When bookings are made meanwhile (the outbox relay publishes through another node)
    codes = [book(web, auth, tour["id"], quantity=1).json()["code"] for _ in range(30)]
    outbox_drained(clean, timeout=60)
    wait_until(lambda: len(smtp_server.messages) >= 30, timeout=90, what="30 invoices with a node down")
    cluster.start_node(first)

    # Then each got one invoice
    time.sleep(2)
    sent = Counter(subject.split()[1] for subject in smtp_server.subjects())
    assert set(sent) == set(codes) and set(sent.values()) == {1}, sent.most_common(3)

    # And failed invoices retried all at once while the node leading emails stops are each sent once
    bookings = [book(web, auth, tour["id"], quantity=1).json() for _ in range(20)]
    wait_until(lambda: len(smtp_server.messages) >= 50, timeout=90, what="the next 20 invoices")
    with clean.begin() as connection:  # as if they had failed: their deliveries forgotten, their jobs stored
        connection.execute(text("DELETE FROM email_deliveries WHERE booking_id = ANY(:ids)"),
                           {"ids": [b["id"] for b in bookings]})
    smtp_server.messages.clear()
    for booking in bookings:
        store(clean, SEND_INVOICE_EMAIL, booking["id"])
    leader = cluster.leader("emails", cluster_vhost)
    cluster.stop_node(leader)
    answer = requests.post(f"{web}/api/jobs/failed/retry-all", headers=auth, timeout=60)
    assert answer.status_code == 202 and answer.json()["retried"] == 20, answer.text
    wait_until(lambda: len(smtp_server.messages) >= 20, timeout=90, what="the 20 retried invoices")
    cluster.start_node(leader)
    time.sleep(2)
    resent = Counter(subject.split()[1] for subject in smtp_server.subjects())
    assert set(resent) == {b["code"] for b in bookings} and set(resent.values()) == {1}, resent.most_common(3)
    assert failed_rows(clean) == []


def test_with_the_first_node_down_processes_start_antrian_queues_reads_and_dead_letters_are_imported(
    clean, cluster, cluster_vhost, on_cluster, start_dramatiq, smtp_server
):
    # Given the first node of BROKER_URL down
    cluster.stop_node(cluster.names[0])

    # Then a worker starts (its start-up check and its broker take the next node) and `antrian queues` answers
    start_dramatiq("mailer", threads=2, **smtp_server.env(), **on_cluster)
    listed = subprocess.run([str(BIN / "antrian"), "queues"], env=base_env(**on_cluster), cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert {line.split()[0] for line in listed.stdout.splitlines()[1:] if line.strip()} >= set(QUEUES)

    # And a message RabbitMQ dead-lettered is imported into failed_jobs by that worker (the only one), through
    # another node
    message = SEND_INVOICE_EMAIL.message(424242)
    connection = pika.BlockingConnection(connection_parameters(on_cluster["BROKER_URL"]))
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_publish("", "emails.XQ", message.encode(), pika.BasicProperties(delivery_mode=2))
    connection.close()
    rows = wait_until(lambda: failed_rows(clean), timeout=60, what="the dead letter imported")
    assert [row["message_id"] for row in rows] == [message.message_id]

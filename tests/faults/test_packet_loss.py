"""Packet loss, delay and a blackout between a sync-worker and RabbitMQ: the run still ends with exact counts.

The worker runs in a network namespace of its own and reaches RabbitMQ, PostgreSQL and the school API
over a link whose packets this test drops and delays (tests/faults/netns.py: this kernel has no netem).
Only the RabbitMQ path is impaired, so what is tested is AMQP under loss: TCP retransmits, acks and
deliveries that arrive late, and a blackout longer than the heartbeat timeout, after which the
connection is dropped, RabbitMQ puts the unacknowledged messages back and the worker reconnects by
itself. PostgreSQL and the school API stay clean, so every student must succeed, counted once.
"""

from __future__ import annotations

import pytest

from antrian.access.audit import command_actor
from antrian.cli.demo import seed_students
from antrian.runtime.broker import make_broker
from antrian.sync.runs import get_run, start_run
from tests.faults.netns import Relay, namespace
from tests.support import (
    BIN,
    TEST_DATABASE,
    TEST_VHOST,
    Service,
    base_env,
    free_port,
    settings_for_tests,
    settled,
    wait_until,
)
from tests.sync_api.sync.helpers import assert_exact_outcome, wait_for_run

STUDENTS = 200
#: Seconds of AMQP heartbeat for the impaired worker: pika gives up after 5 s more without a byte.
HEARTBEAT_S = 2
#: What Dramatiq's consumer logs when its connection is dead; it restarts the consumer 3 s later.
CONNECTION_LOST = "Consumer encountered a connection error"


@pytest.fixture
def link():
    with namespace() as made:
        yield made


def processed(engine, run_id: int) -> int:
    return get_run(engine, run_id)["processed"]


def test_a_run_survives_packet_loss_delay_and_a_blackout_on_the_rabbitmq_path(
    clean, services, start_school_api, start_web, auth, link, tmp_path, request
):
    # Given a sync-worker in its own namespace, reaching everything through relays on the link
    seed_students(clean, STUDENTS)
    school = start_school_api()
    relays = {name: Relay(link.host, port) for name, port in
              (("amqp", 5672), ("postgresql", 5432), ("school", int(school.rsplit(":", 1)[1])))}
    request.addfinalizer(lambda: [relay.close() for relay in relays.values()])
    metrics_port = free_port()
    worker = Service(
        "sync-worker-in-namespace",
        link.command(str(BIN / "sync-worker"), "--processes", "1", "--threads", "8"),
        base_env(
            METRICS_PORT=str(metrics_port),
            BROKER_URL=f"amqp://guest:guest@{link.host}:{relays['amqp'].port}/{TEST_VHOST}?heartbeat={HEARTBEAT_S}",
            DATABASE_URL=f"postgresql+psycopg://postgres@{link.host}:{relays['postgresql'].port}/{TEST_DATABASE}",
            UPSTREAM_BASE_URL=f"http://{link.host}:{relays['school'].port}",
        ),
        tmp_path,
        ready_url=f"http://{link.address}:{metrics_port}/metrics",
    )
    services.append(worker)
    web = start_web()
    try:
        worker.start(timeout=60)
        broker = make_broker(settings_for_tests())
        run = start_run(clean, broker, by=command_actor())
        broker.close()
        wait_until(lambda: processed(clean, run["id"]) >= 20, timeout=60, what="the run under way")

        # When the RabbitMQ path loses 10% of its packets and delays the rest by 100 ± 50 ms
        link.link.impair(ports={relays["amqp"].port}, loss=0.10, delay_ms=100, jitter_ms=50)
        wait_until(lambda: processed(clean, run["id"]) >= 90, timeout=60, interval=0.5,
                   what="students processed over the lossy link")
        assert processed(clean, run["id"]) < STUDENTS, "the run ended before the blackout: use more students"

        # And then loses everything until the worker gives its connection up (missed heartbeats)
        lost_before = worker.log().count(CONNECTION_LOST)
        link.link.impair(ports={relays["amqp"].port}, loss=1.0)
        wait_until(lambda: worker.log().count(CONNECTION_LOST) > lost_before, timeout=45, interval=0.5,
                   what="the worker to notice its connection is dead")

        # And comes back lossy (the worker reconnects through the loss), then clean
        link.link.impair(ports={relays["amqp"].port}, loss=0.10, delay_ms=100, jitter_ms=50)
        after_blackout = processed(clean, run["id"])
        wait_until(lambda: processed(clean, run["id"]) >= min(after_blackout + 20, STUDENTS), timeout=60,
                   interval=0.5, what="students processed over the lossy link after reconnecting")
        link.link.heal()
        finished = wait_for_run(web, auth, run["id"], timeout=60)

        # Then every student succeeded, each counted once, and nothing is left in flight
        assert link.link.dropped > 0
        assert_exact_outcome(clean, finished, STUDENTS, set())
        settled(timeout=60)
        assert get_run(clean, run["id"])["processed"] == STUDENTS
    finally:
        worker.stop()  # before the namespace goes; its log is shown with the others' if the test failed

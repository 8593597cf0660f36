"""QUEUE_TYPE: every queue antrian declares is a quorum queue (or classic), a queue of the other type stops every
process with one line, and a message that kills its worker every time ends as a failed job after the delivery
limit while the queue keeps flowing. Real RabbitMQ (3.10 here) and real worker processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import dramatiq
import pytest
from sqlalchemy import text

from antrian.amqp.queue_types import CLASSIC, QUORUM, TypedRabbitmqBroker, declarations
from tests.shared.crashing_worker import QUEUE as CRASH_QUEUE
from tests.support import BIN, BROKER_URL, ROOT, TEST_VHOST, base_env, free_port, free_ports, wait_until

SPEC_QUEUES = ("sync-pembayaran", "emails", "booking-expiry")


def queue_types(vhost: str = TEST_VHOST) -> dict[str, str]:
    out = subprocess.run(["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "type", "--formatter", "json"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return {row["name"]: row["type"] for row in json.loads(out)}


@pytest.mark.fast
def test_quorum_queues_get_a_delivery_limit_and_at_least_once_dead_lettering_to_their_xq():
    (main, main_args), (delay, delay_args), (dead, dead_args) = declarations("emails", queue_type=QUORUM,
                                                                             delivery_limit=7)
    assert (main, delay, dead) == ("emails", "emails.DQ", "emails.XQ")
    assert main_args == delay_args == {
        "x-queue-type": "quorum", "x-delivery-limit": 7, "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "emails.XQ", "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    assert dead_args == {"x-queue-type": "quorum", "x-message-ttl": 7 * 24 * 3600 * 1000}
    # classic: exactly what Dramatiq itself declares
    (_, classic_args), _, (_, classic_dead) = declarations("emails", queue_type=CLASSIC)
    assert classic_args == {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "emails.XQ"}
    assert classic_dead == {"x-message-ttl": 7 * 24 * 3600 * 1000}
    with pytest.raises(ValueError, match="no priorities"):
        TypedRabbitmqBroker(url=BROKER_URL, queue_type=QUORUM, max_priority=10)


def test_every_queue_a_process_declares_is_quorum_and_the_other_type_stops_it_in_one_line(clean, start_dramatiq):
    start_dramatiq("mailer", threads=1)  # its start-up check declares SPEC's queues, then Dramatiq its own
    types = queue_types()
    for queue in SPEC_QUEUES:
        assert [types.get(name) for name, _ in declarations(queue, queue_type=QUORUM)] == ["quorum"] * 3, types

    # The same queues asked for as classic: each process stops at once, naming the queue and the fix
    for command in ("sync-worker", "mailer", "sync-api"):
        port, metrics_port = free_ports(2)
        result = subprocess.run([str(BIN / command)], env=base_env(QUEUE_TYPE="classic", PORT=str(port),
                                                                  UPSTREAM_BASE_URL="http://127.0.0.1:9",
                                                                  METRICS_PORT=str(metrics_port)),
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (command, result.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith(f"{command}: queue 'sync-pembayaran' exists with other "
                                                       "arguments than QUEUE_TYPE=classic asks for"), lines
        assert "inequivalent arg 'x-" in lines[0]
        assert "run `antrian queues migrate`" in lines[0]


@pytest.fixture
def own_vhost() -> Iterator[str]:
    """A vhost of this test's own: its queues get a delivery limit other tests' processes would refuse."""
    name = f"{TEST_VHOST}_crash"
    grant = ("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    for args in (("delete_vhost", name), ("add_vhost", name), grant):
        subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, timeout=60, check=args[0] != "delete_vhost")
    yield BROKER_URL.rsplit("/", 1)[0] + "/" + name
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True, timeout=60)


def test_a_message_that_kills_its_worker_every_time_ends_as_a_failed_job_after_the_delivery_limit(
    clean, tmp_path, own_vhost
):
    # Given a queue holding a message whose actor SIGKILLs its process, then three ordinary ones, and a delivery
    # limit of 2 (RabbitMQ dead-letters a message after its third delivery)
    log = tmp_path / "ran.log"
    env = base_env(QUEUE_DELIVERY_LIMIT="2", CRASH_TEST_LOG=str(log), METRICS_PORT=str(free_port()),
                   BROKER_URL=own_vhost,
                   dramatiq_queue_prefetch="1")  # one message at a time: only the poison is delivered while it lasts
    broker = TypedRabbitmqBroker(url=own_vhost, queue_type=QUORUM, delivery_limit=2, confirm_delivery=True)
    broker.declare_queue(CRASH_QUEUE, ensure=True)
    for name in ("poison", "a", "b", "c"):
        broker.enqueue(dramatiq.Message(queue_name=CRASH_QUEUE, actor_name="crash", args=(name,), kwargs={},
                                        options={}))
    broker.close()
    command = [sys.executable, "-c", "from antrian.runtime.workers import exec_worker; "
               "exec_worker('mailer', 'tests.shared.crashing_worker', ['--processes', '1', '--threads', '1'])"]

    # When the worker is started again each time it dies (as Kubernetes restarts a pod)
    deaths, logs = 0, []
    for _ in range(6):
        with (tmp_path / f"worker-{deaths}.log").open("w") as stderr:
            worker = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            worker.wait(timeout=20)
            deaths += 1
            logs.append((tmp_path / f"worker-{deaths - 1}.log").read_text()[-1500:])
        except subprocess.TimeoutExpired:  # it lives: the poison is gone from the queue
            break
    try:
        # Then it died three times, the ordinary messages each ran once, and the poison is a failed job
        assert deaths == 3, f"died {deaths} times; the last said: {logs[-1:]}"
        wait_until(lambda: log.exists() and sorted(log.read_text().split()) == ["a", "b", "c"], timeout=30,
                   what="the ordinary messages")

        def stored():
            with clean.connect() as connection:
                return connection.execute(text(
                    "SELECT args, exception FROM failed_jobs WHERE queue_name = :q"), {"q": CRASH_QUEUE}).all()

        rows = wait_until(stored, timeout=30, what="the poison in failed_jobs (the dead-letter importer)")
        assert [(list(args), exception.split(":")[0]) for args, exception in rows] == [
            (["poison"], "DeliveryLimitReached")]
        time.sleep(1)
        assert sorted(log.read_text().split()) == ["a", "b", "c"]
    finally:
        worker.terminate()
        worker.wait(timeout=30)

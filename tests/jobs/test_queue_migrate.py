"""``antrian queues migrate``: queues of the other type (or other arguments) are moved to QUEUE_TYPE with every
message kept exactly once (ready, delayed and dead-lettered, headers included), also after a crash midway, and
refused while something consumes them. Real RabbitMQ (3.10 here), the real command."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator

import pika
import pytest

from antrian.amqp.queue_types import CLASSIC, QUORUM, declarations
from antrian.messages import QUEUES, SEND_INVOICE_EMAIL, SYNC_STUDENT_PAYMENT
from tests.support import BIN, BROKER_URL, ROOT, TEST_VHOST, base_env, free_port, wait_until

#: Every queue antrian declares: each of SPEC's with its .DQ and .XQ.
NAMES = [name for queue in QUEUES for name, _ in declarations(queue, queue_type=QUORUM)]
#: Headers RabbitMQ itself sets on each delivery of a quorum queue's message: not part of the message.
DELIVERY_HEADERS = {"x-delivery-count"}


def antrian_migrate(*args: str, queue_type: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "antrian"), "queues", "migrate", *args], cwd=ROOT, capture_output=True,
                          env=base_env(QUEUE_TYPE=queue_type, **env), text=True, timeout=120)


def queue_types() -> dict[str, str]:
    out = subprocess.run(["rabbitmqctl", "-q", "list_queues", "-p", TEST_VHOST, "name", "type", "--formatter", "json"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return {row["name"]: row["type"] for row in json.loads(out)}


def delete_every_queue() -> None:
    connection = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
    channel = connection.channel()
    for name in NAMES:
        channel.queue_delete(name)
        channel.queue_delete(name + ".migrating")
    connection.close()


@pytest.fixture
def classic_queues(infrastructure) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    """Every queue declared classic, exactly as QUEUE_TYPE=classic declares them; all deleted afterwards (the
    processes of the next tests declare their own)."""
    delete_every_queue()
    connection = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
    channel = connection.channel()
    for queue in QUEUES:
        for name, arguments in declarations(queue, queue_type=CLASSIC):
            channel.queue_declare(name, durable=True, arguments=arguments)
    yield channel
    if connection.is_open:
        connection.close()
    delete_every_queue()


def publish(channel, queue: str, body: bytes, **properties) -> None:
    channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2, **properties))


def contents(*, take: bool = False) -> dict[str, Counter]:
    """Each queue's messages as a multiset of (body, headers, properties), read and given back (not consumed), or
    taken (a consumer of a quorum queue is given at most 2,000 messages that it does not acknowledge)."""
    connection = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
    every = {}
    for name in NAMES:
        channel = connection.channel()
        left = channel.queue_declare(name, passive=True).method.message_count
        found: Counter = Counter()
        for method, properties, body in channel.consume(name, auto_ack=take, inactivity_timeout=5) if left else ():
            assert method is not None, f"{name}: {left} messages counted, {found.total()} came"
            headers = {k: v for k, v in (properties.headers or {}).items() if k not in DELIVERY_HEADERS}
            found[(body, repr(sorted(headers.items())), properties.delivery_mode, properties.content_type)] += 1
            if found.total() == left:
                break
        channel.close()  # gives every message back, unless taken
        every[name] = found
    connection.close()
    return every


def test_ready_delayed_and_dead_lettered_messages_move_to_quorum_and_back_each_exactly_once(classic_queues):
    # Given classic queues holding ready messages, delayed ones (on .DQ, with Dramatiq's eta) and dead-lettered
    # ones (nacked from the queue: RabbitMQ put them on .XQ with their x-death header)
    channel = classic_queues
    for booking_id in (1, 2):
        publish(channel, "emails", SEND_INVOICE_EMAIL.encode(booking_id))
    for _ in range(2):
        method, _, _ = channel.basic_get("emails")
        channel.basic_nack(method.delivery_tag, requeue=False)
    for booking_id in (3, 4, 4):  # two messages alike: both must stay
        publish(channel, "emails", SEND_INVOICE_EMAIL.encode(booking_id), content_type="application/json",
                headers={"x-trace": f"t{booking_id}"})
    delayed = SEND_INVOICE_EMAIL.message(5).copy(queue_name="emails.DQ", options={"eta": int(time.time() * 1000)})
    publish(channel, "emails.DQ", delayed.encode())
    for idperson in range(10):
        publish(channel, "sync-pembayaran", SYNC_STUDENT_PAYMENT.encode(idperson, 1))
    before = contents()
    assert [sum(before[name].values()) for name in ("emails", "emails.DQ", "emails.XQ", "sync-pembayaran")] == \
        [3, 1, 2, 10]
    assert all("x-death" in headers for (_, headers, _, _) in before["emails.XQ"])

    # When they are migrated to quorum
    result = antrian_migrate(queue_type=QUORUM)
    # Then each of the nine is quorum, holds the same messages exactly once, and no holding queue is left
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "emails: classic -> quorum, 3 messages moved" in lines
    assert "emails.XQ: classic -> quorum, 2 messages moved" in lines
    assert "booking-expiry.DQ: classic -> quorum, 0 messages moved" in lines
    assert lines[-1] == "every queue is quorum; 16 messages moved"
    assert queue_types() == dict.fromkeys(NAMES, "quorum")
    assert contents() == before

    # And back to classic: the same
    result = antrian_migrate(queue_type=CLASSIC)
    assert result.returncode == 0, result.stderr
    assert "emails.DQ: quorum -> classic, 1 message moved" in result.stdout.splitlines()
    assert queue_types() == dict.fromkeys(NAMES, "classic")
    assert contents() == before

    # And a second run changes nothing
    result = antrian_migrate(queue_type=CLASSIC)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{name}: already classic" for name in NAMES] + \
        ["every queue is classic; 0 messages moved"]
    assert contents() == before


@pytest.mark.parametrize("phase", ["into the holding queue", "back from the holding queue"])
def test_a_migration_killed_midway_is_finished_by_the_next_run_with_every_message_once(classic_queues, phase):
    # Given 4,000 messages on a classic queue
    count = 4000
    channel = classic_queues
    channel.tx_select()
    for i in range(count):
        publish(channel, "emails", SEND_INVOICE_EMAIL.encode(i))
    channel.tx_commit()
    before = contents()

    # When the migration is SIGKILLed while it moves them (out to emails.migrating, or back from it)
    process = subprocess.Popen([str(BIN / "antrian"), "queues", "migrate"], env=base_env(QUEUE_TYPE=QUORUM),
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    probe = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
    most = 0

    def midway() -> bool:
        """Some 1,000 messages moved and as many still to go, so the kill lands well before the phase ends."""
        nonlocal most
        try:
            held = probe.channel().queue_declare("emails.migrating", passive=True).method.message_count
        except pika.exceptions.ChannelClosedByBroker:
            return False  # not declared yet
        most = max(most, held)
        if phase == "into the holding queue":
            return 1000 <= held <= count - 1000
        return most > held and 1000 <= held <= count - 1000  # going down: on its way back

    try:
        wait_until(midway, timeout=30, interval=0.02, what=f"the move {phase} midway")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        probe.close()

    # Then the next run finishes it: every message once, in a quorum queue, nothing left held
    result = antrian_migrate(queue_type=QUORUM)
    assert result.returncode == 0, result.stderr
    assert f"emails: {'classic' if phase.startswith('into') else 'quorum'} (an interrupted migration" \
        in result.stdout
    assert queue_types() == dict.fromkeys(NAMES, "quorum")
    assert contents(take=True) == before


def test_queues_that_something_consumes_are_refused_in_one_line_and_nothing_moves(classic_queues):
    # Given messages on classic queues, and something consuming emails (a worker left running)
    channel = classic_queues
    publish(channel, "emails.DQ", SEND_INVOICE_EMAIL.encode(1))
    publish(channel, "sync-pembayaran", SYNC_STUDENT_PAYMENT.encode(7, 1))
    channel.basic_consume("emails", lambda *args: None)
    before = contents()

    # When the migration runs: one line naming the queue, exit 1, nothing changed
    result = antrian_migrate(queue_type=QUORUM)
    assert result.returncode == 1, result.stdout
    assert result.stderr.splitlines() == [
        "Error: queues have consumers: emails (1); stop sync-api and every worker first, then run it again "
        "(nothing was changed)"
    ]
    assert queue_types() == dict.fromkeys(NAMES, "classic")
    assert contents() == before
    # --dry-run says what it would do, and changes nothing either
    planned = antrian_migrate("--dry-run", queue_type=QUORUM)
    assert planned.returncode == 0, planned.stderr
    assert "emails: classic -> quorum, 0 messages to move; 1 consumer: stop them first" in planned.stdout
    assert "sync-pembayaran: classic -> quorum, 1 message to move" in planned.stdout
    assert queue_types() == dict.fromkeys(NAMES, "classic")

    # RabbitMQ unreachable: the usual one line
    result = antrian_migrate(queue_type=QUORUM, BROKER_URL=f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    assert result.returncode == 3
    assert result.stderr.startswith("antrian queues migrate: cannot reach the broker at amqp://127.0.0.1:")
    assert len(result.stderr.splitlines()) == 1

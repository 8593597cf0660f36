"""The fan-out publishes every student once confirmed, resumes after a crash and never runs twice at once."""

from __future__ import annotations

import json

import pika
import pytest
from sqlalchemy import text

from antrian.access.audit import command_actor
from antrian.amqp.publisher import ConfirmedPublisher
from antrian.cli.demo import seed_students
from antrian.runtime.broker import make_broker
from antrian.sync.runs import get_run, start_run
from sync_api.sync import fanout
from tests.support import BROKER_URL, purge_queues, settings_for_tests
from tests.sync_api.sync.helpers import idpersons


@pytest.fixture
def broker(infrastructure):
    broker = make_broker(settings_for_tests())
    yield broker
    broker.close()


class CrashingPublisher(ConfirmedPublisher):
    """Publishes ``batches`` whole batches, then half of the next one, then dies."""

    def __init__(self, batches: int):
        super().__init__(BROKER_URL)
        self.left = batches

    def publish(self, queue_name, bodies):
        bodies = list(bodies)
        if self.left == 0:
            super().publish(queue_name, bodies[: len(bodies) // 2])
            self.wait_for_confirms()
            raise ConnectionError("worker died mid-batch")
        self.left -= 1
        return super().publish(queue_name, bodies)


def drain_student_messages() -> list[int]:
    """Consume every sync_student_payment message on the queue; return their idpersons."""
    connection = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
    channel = connection.channel()
    seen = []
    while True:
        method, _properties, body = channel.basic_get("sync-pembayaran", auto_ack=True)
        if method is None:
            break
        message = json.loads(body)
        if message["actor_name"] == "sync_student_payment":
            seen.append(message["args"][0])
    connection.close()
    return seen


def fanout_state(engine, run_id):
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT fanout_cursor, fanout_done, total FROM sync_runs WHERE id = :id"), {"id": run_id}
        ).one()


def test_a_crashed_fanout_resumes_from_its_cursor(clean, broker, monkeypatch):
    # Given 5,000 students and a run, fanned out in batches of 1,000 with one more batch in flight
    monkeypatch.setattr(fanout, "BATCH_SIZE", 1000)
    monkeypatch.setattr(fanout, "BATCHES_IN_FLIGHT", 2)
    seed_students(clean, 5000)
    run = start_run(clean, broker, by=command_actor())
    purge_queues()  # the fan-out message itself: we run the fan-out by hand

    # When the fan-out dies half-way through publishing its third batch (the first one confirmed)
    with pytest.raises(ConnectionError):
        fanout.fan_out(clean, run["id"], lambda: CrashingPublisher(batches=2))
    state = fanout_state(clean, run["id"])
    assert not state.fanout_done
    assert state.fanout_cursor == idpersons(1000)[-1]

    # And it is delivered again and finishes
    fanout.fan_out(clean, run["id"], lambda: ConfirmedPublisher(BROKER_URL))

    # Then every student has exactly one item and at least one message; only what was in flight
    # after the last confirmed batch went twice (the second batch and half of the third)
    state = fanout_state(clean, run["id"])
    assert state.fanout_done and state.total == 5000
    published = drain_student_messages()
    assert set(published) == set(idpersons(5000))
    assert len(published) == 5000 + 1000 + 500
    with clean.connect() as connection:
        items = connection.execute(text("SELECT count(*) FROM sync_items WHERE run_id = :id"), {"id": run["id"]})
        assert items.scalar() == 5000


def test_only_one_fanout_of_a_run_works_at_a_time(clean, broker):
    seed_students(clean, 10)
    run = start_run(clean, broker, by=command_actor())
    purge_queues()
    with clean.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:ns, :id)"), {"ns": fanout.FANOUT_LOCK_NAMESPACE, "id": run["id"]})
        fanout.fan_out(clean, run["id"], lambda: ConfirmedPublisher(BROKER_URL))
        assert drain_student_messages() == []
        assert not fanout_state(clean, run["id"]).fanout_done
        holder.execute(text("SELECT pg_advisory_unlock_all()"))


def test_a_run_with_no_students_finishes_at_once(clean, broker):
    run = start_run(clean, broker, by=command_actor())
    assert run["total"] == 0 and run["isRunning"]
    fanout.fan_out(clean, run["id"], lambda: ConfirmedPublisher(BROKER_URL))
    finished = get_run(clean, run["id"])
    assert (finished["status"], finished["percent"], finished["isRunning"]) == ("finished", 100.0, False)


def test_students_added_after_the_start_are_not_in_the_run(clean, broker):
    seed_students(clean, 10)
    run = start_run(clean, broker, by=command_actor())
    with clean.begin() as connection:
        connection.execute(text("INSERT INTO students (idperson, name) VALUES (99, 'Late Comer')"))
    fanout.fan_out(clean, run["id"], lambda: ConfirmedPublisher(BROKER_URL))
    assert fanout_state(clean, run["id"]).total == 10
    assert 99 not in drain_student_messages()


def test_a_fanout_for_a_run_that_never_committed_does_nothing(clean, monkeypatch):
    monkeypatch.setattr(fanout, "RUN_VISIBLE_WAIT_S", 0.2)
    fanout.fan_out(clean, 12345, lambda: ConfirmedPublisher(BROKER_URL))
    assert drain_student_messages() == []


def test_a_student_deleted_during_the_fanout_still_gets_its_message(clean, broker, monkeypatch):
    # Given a fan-out that recorded every item and died after its first confirmed batch
    monkeypatch.setattr(fanout, "BATCH_SIZE", 100)
    monkeypatch.setattr(fanout, "BATCHES_IN_FLIGHT", 2)
    seed_students(clean, 500)
    run = start_run(clean, broker, by=command_actor())
    purge_queues()
    with pytest.raises(ConnectionError):
        fanout.fan_out(clean, run["id"], lambda: CrashingPublisher(batches=2))
    # When the school deletes a student whose message had not gone out yet
    gone = idpersons(500)[-1]
    with clean.begin() as connection:
        connection.execute(text("DELETE FROM students WHERE idperson = :idperson"), {"idperson": gone})
    fanout.fan_out(clean, run["id"], lambda: ConfirmedPublisher(BROKER_URL))
    # Then its recorded item is still published (its outcome will be "student no longer exists"),
    # so the run can reach its total
    assert gone in drain_student_messages()
    assert fanout_state(clean, run["id"]).total == 500

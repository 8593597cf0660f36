"""A redelivered or duplicated message changes nothing the second time; concurrent outcomes count once."""

from __future__ import annotations

import re
import threading

import pytest
import requests
from sqlalchemy import text

from antrian.access.audit import command_actor
from antrian.cli.demo import seed_students
from antrian.db.engine import make_engine
from antrian.messages import SYNC_STUDENT_PAYMENT
from antrian.runtime.broker import make_broker
from antrian.sync.runs import get_run, start_run
from sync_api.sync.student_sync import StudentSync
from sync_api.sync.upstream import SchoolApi
from tests.support import BROKER_URL, DATABASE_URL, queue_depth, settings_for_tests, settled, wait_until
from tests.sync_api.sync.helpers import idpersons


@pytest.fixture
def broker(infrastructure):
    broker = make_broker(settings_for_tests())
    yield broker
    broker.close()


def metric(text_: str, name: str, **labels: str) -> float:
    selector = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = rf"^{re.escape(name)}\{{{re.escape(selector)}\}} (\S+)$" if labels else rf"^{re.escape(name)} (\S+)$"
    found = re.search(pattern, text_, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def snapshot(engine, run_id):
    with engine.connect() as connection:
        students = connection.execute(
            text("SELECT idperson, pembayaran, pembayaran_synced_at FROM students ORDER BY idperson")
        ).all()
        items = connection.execute(
            text("SELECT idperson, status, error, finished_at FROM sync_items WHERE run_id = :id ORDER BY idperson"),
            {"id": run_id},
        ).all()
    return students, items, get_run(engine, run_id)


def test_the_same_message_twice_changes_nothing(clean, broker, start_school_api, start_worker):
    # Given a finished run of three students
    seed_students(clean, 3)
    worker = start_worker(start_school_api(), threads=2)
    run = start_run(clean, broker, by=command_actor())
    wait_until(lambda: not get_run(clean, run["id"])["isRunning"], timeout=30, what="the run to finish")
    settled()  # counters go up after the outcome's commit, and every message is acked after them
    before = snapshot(clean, run["id"])
    metrics_before = requests.get(worker.metrics_url, timeout=5).text

    # When one student's message is delivered twice more (the same message, as a redelivery would)
    message = SYNC_STUDENT_PAYMENT.message(idpersons(1)[0], run["id"])
    broker.enqueue(message)
    broker.enqueue(message)

    def consumed_both():
        text_ = requests.get(worker.metrics_url, timeout=5).text
        done = metric(text_, "dramatiq_messages_total", actor_name="sync_student_payment", queue_name="sync-pembayaran")
        return done - metric(
            metrics_before, "dramatiq_messages_total", actor_name="sync_student_payment", queue_name="sync-pembayaran"
        ) >= 2

    wait_until(consumed_both, timeout=30, what="both duplicates to be processed")

    # Then nothing changed: no second store, no second count, no second upstream call
    assert snapshot(clean, run["id"]) == before
    metrics_after = requests.get(worker.metrics_url, timeout=5).text
    for name, labels in [
        ("antrian_sync_students_total", {"outcome": "success"}),
        ("antrian_upstream_request_seconds_count", {"outcome": "ok"}),
    ]:
        assert metric(metrics_after, name, **labels) == metric(metrics_before, name, **labels) > 0
    assert queue_depth("sync-pembayaran.XQ") == 0


def test_concurrent_outcomes_for_one_student_count_once(clean, broker):
    # Given a run with one pending student (no worker: we record outcomes ourselves)
    seed_students(clean, 1)
    run = start_run(clean, broker, by=command_actor())
    with clean.begin() as connection:
        connection.execute(
            text("INSERT INTO sync_items (run_id, idperson) VALUES (:run, :idperson)"),
            {"run": run["id"], "idperson": idpersons(1)[0]},
        )
    engine = make_engine(DATABASE_URL, autocommit=True)
    sync = StudentSync(engine=engine, school_api=SchoolApi(base_url="http://127.0.0.1:1", token=None, timeout_s=1))

    # When eight threads record its outcome at the same instant
    barrier = threading.Barrier(8)
    results = []

    def record(n):
        barrier.wait()
        results.append(sync.record(idpersons(1)[0], run["id"], status="success", data={"n": n}))

    threads = [threading.Thread(target=record, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then exactly one counted, and the run counts one student
    engine.dispose()
    assert sorted(results) == [False] * 7 + [True]
    assert get_run(clean, run["id"])["processed"] == 1


def test_two_workers_recording_at_once_batch_their_outcomes_and_count_each_once(
        clean, broker, monkeypatch, caplog):
    # Given a run over 600 students, and two worker processes' recorders (each its own batches and connections)
    import sync_api.sync.student_sync as student_sync
    from antrian.amqp.publisher import ConfirmedPublisher
    from sync_api.sync import fanout
    students = idpersons(600)
    seed_students(clean, len(students))
    run = start_run(clean, broker, by=command_actor())
    fanout.fan_out(clean, run["id"], lambda: ConfirmedPublisher(BROKER_URL))
    engines = [make_engine(DATABASE_URL, autocommit=True) for _ in range(2)]
    syncs = [StudentSync(engine=engine, school_api=SchoolApi(base_url="http://127.0.0.1:1", token=None, timeout_s=1))
             for engine in engines]
    statements = []
    record = student_sync._record
    monkeypatch.setattr(student_sync, "_record", lambda connection, outcomes: (
        statements.append(len(outcomes)), record(connection, outcomes))[1])

    # When 16 threads of each record every student's outcome, each student once, over every shard at once
    def work(sync: StudentSync, mine: list[int]) -> None:
        for idperson in mine:
            sync.record(idperson, run["id"], status="failed" if idperson % 7 == 0 else "success", data={"n": 1},
                        error="refused")

    threads = [threading.Thread(target=work, args=(syncs[n % 2], students[n::32])) for n in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    # Then each counted once, the run finished, in fewer statements than students, and no batch deadlocked
    for engine in engines:
        engine.dispose()
    finished = get_run(clean, run["id"])
    failed = sum(1 for idperson in students if idperson % 7 == 0)
    assert (finished["status"], finished["processed"], finished["failed"]) == ("finished", 600, failed)
    assert sum(statements) == 600 and len(statements) < 600 / 2, statements
    assert "deadlock" not in caplog.text


def test_a_redelivery_finishes_a_run_whose_last_outcome_lost_its_finish(clean, broker, monkeypatch):
    # Given a run whose every outcome is recorded, but the worker died before the finish check
    import sync_api.sync.student_sync as student_sync
    from antrian.amqp.publisher import ConfirmedPublisher
    from sync_api.sync import fanout
    seed_students(clean, 3)
    run = start_run(clean, broker, by=command_actor())
    fanout.fan_out(clean, run["id"], lambda: ConfirmedPublisher(BROKER_URL))
    engine = make_engine(DATABASE_URL, autocommit=True)
    sync = StudentSync(engine=engine, school_api=SchoolApi(base_url="http://127.0.0.1:1", token=None, timeout_s=1))
    monkeypatch.setattr(student_sync, "finish_if_complete", lambda connection, run_id: False)
    for idperson in idpersons(3):
        assert sync.record(idperson, run["id"], status="success", data={})
    assert get_run(clean, run["id"])["isRunning"]
    monkeypatch.undo()

    # When the last student's message is delivered again
    sync.sync(idpersons(3)[-1], run["id"], final_attempt=False)

    # Then the duplicate changes no count but finishes the run
    finished = get_run(clean, run["id"])
    engine.dispose()
    assert (finished["status"], finished["processed"], finished["isRunning"]) == ("finished", 3, False)

"""The failed-job store's own promises, on the real database: what PostgreSQL refuses is stored anyway, a
retry-all retries only what was stored when it began, and the middleware runs where it must."""

from __future__ import annotations

import threading

import dramatiq
from dramatiq.middleware import Retries, TimeLimit
from sqlalchemy import text

from antrian.access.audit import command_actor
from antrian.jobs import failed_jobs
from antrian.jobs.keep_failed import KeepFailedJobs, describe
from antrian.messages import SEND_ETICKET_EMAIL
from antrian.runtime.broker import make_broker
from tests.jobs.helpers import failed_rows, store
from tests.support import BROKER_URL, settings_for_tests, take_messages


def settings():
    return settings_for_tests()


def test_nul_characters_postgresql_refuses_are_stored_as_replacement_characters(clean):
    message = dramatiq.Message(queue_name="emails", actor_name="send_eticket_email", args=("a\x00b",),
                               kwargs={"note": "\x00"}, options={})
    with clean.begin() as connection:
        failed_jobs.keep(connection, message, describe(ValueError("bad \x00 byte"), attempts=1))
    [row] = failed_rows(clean)
    assert row["args"] == ["a\ufffdb"] and row["kwargs"] == {"note": "\ufffd"}
    assert row["exception"] == "ValueError: bad \ufffd byte"


def test_a_retry_all_retries_only_what_was_stored_when_it_began(clean):
    # Every retried row is replaced at once by a new failure, as a worker re-failing it at once would do:
    # a retry-all that kept taking new rows would never end.
    with clean.begin() as connection:
        connection.execute(text(
            "CREATE FUNCTION antrian_test_refail() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO failed_jobs (message_id, queue_name, actor_name, args, kwargs, options, attempts, exception) "
            "VALUES (OLD.message_id || '-again', OLD.queue_name, OLD.actor_name, OLD.args, OLD.kwargs, OLD.options, "
            "3, 'failed again'); RETURN OLD; END $$"))
        connection.execute(text("CREATE TRIGGER antrian_test_refail AFTER DELETE ON failed_jobs FOR EACH ROW "
                                "WHEN (OLD.message_id NOT LIKE '%-again') EXECUTE FUNCTION antrian_test_refail()"))
    try:
        first = [store(clean, SEND_ETICKET_EMAIL, n) for n in range(5)]
        broker = make_broker(settings())
        result = {}
        worker = threading.Thread(target=lambda: result.update(n=failed_jobs.retry(
            clean, broker, BROKER_URL, by=command_actor(), batch_size=2)))
        worker.start()
        worker.join(30)
        broker.close()
        assert not worker.is_alive() and result == {"n": 5}
        rows = failed_rows(clean)
        assert len(rows) == 5 and all(row["id"] > max(first) for row in rows)
        assert len(take_messages("emails")) == 5
    finally:
        with clean.begin() as connection:
            connection.execute(text("DROP TRIGGER antrian_test_refail ON failed_jobs"))
            connection.execute(text("DROP FUNCTION antrian_test_refail()"))


def test_the_store_runs_first_so_it_sees_retries_given_up_and_the_time_limit_stopped(clean):
    broker = make_broker(settings())
    try:
        kinds = [type(m) for m in broker.middleware]
        assert kinds[0] is KeepFailedJobs
        assert kinds.index(TimeLimit) > 0 and kinds.index(Retries) > 0
    finally:
        broker.close()

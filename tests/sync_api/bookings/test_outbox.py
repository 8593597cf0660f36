"""The transactional outbox: a message leaves only with its commit, and survives RabbitMQ being away."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from antrian.bookings import outbox
from antrian.db.engine import make_engine
from antrian.messages import SEND_INVOICE_EMAIL
from antrian.runtime.broker import make_broker
from tests.support import (
    BROKER_URL,
    DATABASE_URL,
    queue_depth,
    rabbitmq_stopped,
    restart_postgresql,
    restart_rabbitmq,
    settings_for_tests,
    take_messages,
    wait_until,
)
from tests.sync_api.bookings.helpers import book, create_tour


@pytest.fixture
def relay_parts(clean):
    settings = settings_for_tests()
    engine, broker = make_engine(DATABASE_URL), make_broker(settings)
    yield engine, broker
    broker.close()
    engine.dispose()


def outbox_rows(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM outbox")).scalar_one()


def test_a_message_leaves_only_if_its_transaction_commits(relay_parts):
    engine, broker = relay_parts
    relay = outbox.OutboxRelay(engine, broker, BROKER_URL)
    with engine.connect() as connection:
        outbox.add(connection, SEND_INVOICE_EMAIL, 1)
        assert relay.drain() == 0  # written, not committed: invisible to the relay
        connection.rollback()
    with engine.connect() as connection:
        outbox.add(connection, SEND_INVOICE_EMAIL, 2)
        assert relay.drain() == 0
        connection.commit()
    assert relay.drain() == 1
    relay.close()
    assert [message["args"] for message in take_messages("emails")] == [[2]]
    assert outbox_rows(engine) == 0


def test_relays_running_at_once_publish_each_message_once(relay_parts):
    engine, broker = relay_parts
    with engine.begin() as connection:
        for booking_id in range(3000):
            outbox.add(connection, SEND_INVOICE_EMAIL, booking_id)
    relays = [outbox.OutboxRelay(engine, broker, BROKER_URL, batch_size=100) for _ in range(3)]
    published = [0] * len(relays)

    def drain(index):
        published[index] = relays[index].drain()

    threads = [threading.Thread(target=drain, args=(index,)) for index in range(len(relays))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for relay in relays:
        relay.close()
    assert sum(published) == 3000 and all(published), published
    ids = sorted(message["args"][0] for message in take_messages("emails"))
    assert ids == list(range(3000))


@pytest.mark.restarts
def test_a_booking_made_while_rabbitmq_is_stopped_is_queued_once_it_is_back(clean, start_web, auth, engine):
    web = start_web()
    tour = create_tour(web, auth, quota=5)
    with rabbitmq_stopped():
        response = book(web, auth, tour["id"], quantity=1)
        assert response.status_code == 201, response.text
        assert outbox_rows(engine) == 1
    wait_until(lambda: outbox_rows(engine) == 0, timeout=30, what="the relay to publish after RabbitMQ came back")
    wait_until(lambda: queue_depth("emails") >= 1, timeout=10, what="the invoice message")
    messages = take_messages("emails")
    assert [message["args"] for message in messages] == [[response.json()["id"]]]


@pytest.mark.restarts
@pytest.mark.parametrize("restart", [restart_rabbitmq, restart_postgresql], ids=["rabbitmq", "postgresql"])
def test_the_relay_keeps_working_after_a_restart(clean, start_web, auth, engine, restart):
    web = start_web()
    tour = create_tour(web, auth, quota=5)
    before = book(web, auth, tour["id"], quantity=1).json()["id"]
    wait_until(lambda: queue_depth("emails") == 1, timeout=10, what="the first invoice message")
    restart()
    after = wait_until(lambda: _booked(web, auth, tour["id"]), timeout=30, what="a booking after the restart")
    wait_until(lambda: queue_depth("emails") == 2, timeout=30, what="the second invoice message")
    assert sorted(message["args"][0] for message in take_messages("emails")) == [before, after]


def _booked(web, auth, tour_id):
    response = book(web, auth, tour_id, quantity=1)
    return response.json()["id"] if response.status_code == 201 else None

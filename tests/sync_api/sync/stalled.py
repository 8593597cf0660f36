"""A sync run stalled on purpose: its fan-out done here, and one student's job taken off the queue."""

from __future__ import annotations

import json

import pika
import requests
from sqlalchemy import Engine

from antrian.amqp.publisher import ConfirmedPublisher
from antrian.messages import SYNC_QUEUE
from sync_api.sync import fanout
from tests.support import BROKER_URL, take_messages


def take_one(queue: str = SYNC_QUEUE) -> dict:
    """Consume (and so lose) the first message waiting on ``queue``."""
    connection = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
    try:
        method, _properties, body = connection.channel().basic_get(queue, auto_ack=True)
        assert method is not None, f"no message on {queue}"
        return json.loads(body)
    finally:
        connection.close()


def start_fanned_out_run(engine: Engine, web: str, auth: dict) -> int:
    """Start a run with no sync-worker consuming, and fan it out here: every student's job is queued."""
    response = requests.post(f"{web}/api/sync-runs", headers=auth, timeout=5)
    assert response.status_code == 202, response.text
    run_id = response.json()["id"]
    [fan_out_message] = take_messages(SYNC_QUEUE)
    assert fan_out_message["actor_name"] == "fan_out_sync_run"
    fanout.fan_out(engine, run_id, lambda: ConfirmedPublisher(BROKER_URL))
    return run_id


def start_stalled_run(engine: Engine, web: str, auth: dict) -> tuple[int, int]:
    """A run whose every job is queued but one, lost: ``(run_id, the lost student's idperson)``.
    Once a sync-worker consumes, every student but that one gets an outcome and the run never finishes."""
    run_id = start_fanned_out_run(engine, web, auth)
    lost = take_one()
    assert lost["actor_name"] == "sync_student_payment" and lost["args"][1] == run_id
    return run_id, lost["args"][0]


def get_run(web: str, auth: dict, run_id: int) -> dict:
    response = requests.get(f"{web}/api/sync-runs/{run_id}", headers=auth, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()

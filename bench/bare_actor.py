"""The bare Dramatiq baseline: the least code that does a student's sync (one GET, one UPDATE per message).

Run as ``python -m dramatiq bench.bare_actor``. A RabbitmqBroker with Dramatiq's default
middleware and no confirms, no bookkeeping, no retries policy, no metrics: what antrian's
sync-worker is compared against.
"""

from __future__ import annotations

import json
import os
import threading

import dramatiq
import requests
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from sqlalchemy import create_engine, text

QUEUE = "bench-bare"
ACTOR = "bare_sync_student"

_broker_url = os.environ.get("BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/antrian_bench")
_database_url = os.environ.get("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/antrian_bench")
_upstream = os.environ.get("UPSTREAM_BASE_URL", "http://127.0.0.1:8081")

if os.environ.get("BARE_QUEUE_TYPE") == "quorum":
    # Part (l): the same bare actor on a quorum queue (plain Dramatiq cannot declare one; antrian's broker
    # extension only builds the queue's arguments, nothing else of antrian runs).
    from antrian.amqp.queue_types import TypedRabbitmqBroker

    broker: RabbitmqBroker = TypedRabbitmqBroker(url=_broker_url, queue_type="quorum")
else:
    broker = RabbitmqBroker(url=_broker_url)
dramatiq.set_broker(broker)

# Created lazily in each worker process (never before Dramatiq forks).
_engine = None
_engine_lock = threading.Lock()
_local = threading.local()

_UPDATE = text(
    "UPDATE students SET pembayaran = CAST(:data AS jsonb), pembayaran_synced_at = now() WHERE idperson = :idperson"
)


def _get_engine():
    global _engine
    if _engine is None:
        with _engine_lock:
            if _engine is None:
                _engine = create_engine(_database_url, pool_size=32, max_overflow=8)
    return _engine


def _session() -> requests.Session:
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    return session


@dramatiq.actor(actor_name=ACTOR, queue_name=QUEUE)
def bare_sync_student(idperson: int) -> None:
    response = _session().get(f"{_upstream}/siswa/{idperson}/pembayaran", timeout=30)
    response.raise_for_status()
    data = response.json()["data"]
    with _get_engine().begin() as connection:
        connection.execute(_UPDATE, {"data": json.dumps(data), "idperson": idperson})

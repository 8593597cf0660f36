"""How each queue is doing (Laravel's ``queue:monitor``): depth, in flight, delayed, failed, consumers, rates.

RabbitMQ's management API has it all, rates included. Where the management plugin is not
reachable, a passive declare of each queue still gives its ready messages and consumers; the
numbers it cannot know are ``None`` and ``source`` says ``amqp``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, replace
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pika
import requests
from dramatiq.brokers.rabbitmq import dq_name, xq_name
from pika.exceptions import AMQPError, ChannelClosedByBroker
from sqlalchemy import Engine

from antrian.amqp.connection import connection_parameters, nodes, redact
from antrian.config import Settings
from antrian.errors import DependencyUnavailable
from antrian.jobs import failed_jobs, pauses, waits
from antrian.messages import QUEUES

#: Every queue of SPEC, always listed (even before a worker declared it).
SPEC_QUEUES = QUEUES
MANAGEMENT_PORT = 15672
MANAGEMENT_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class QueueStats:
    """One Dramatiq queue with its delay (``.DQ``) and dead-letter (``.XQ``) queues folded in."""

    name: str
    #: Messages waiting to be delivered.
    ready: int | None
    #: Delivered to a worker and not acknowledged yet (running, or prefetched).
    unacknowledged: int | None
    #: Waiting for their retry's backoff to pass (Dramatiq holds them unacknowledged from ``.DQ``).
    delayed: int | None
    #: Out of attempts: stored in ``failed_jobs``, plus any still in ``.XQ`` waiting to be stored.
    dead_lettered: int
    #: Worker threads' channels consuming the queue.
    consumers: int | None
    #: Messages per second published to the queue and acknowledged from it (management API only).
    publish_rate: float | None
    ack_rate: float | None
    #: ``management`` or ``amqp`` (no rates, no unacknowledged count).
    source: str
    #: Estimated median and 95th percentile of the waits (seconds from enqueue, or a delayed message's due time,
    #: to the start of processing) of the messages that started in the last ``waits.WINDOW_MINUTES`` minutes,
    #: and how many did; ``None`` when none did (:mod:`antrian.jobs.waits`).
    wait_p50_seconds: float | None = None
    wait_p95_seconds: float | None = None
    wait_messages: int = 0
    #: Paused by an operator (:mod:`antrian.jobs.pauses`): since when (ISO 8601) and from where.
    paused: bool = False
    paused_at: str | None = None
    paused_by: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def management_urls(settings: Settings) -> list[str]:
    """``RABBITMQ_MANAGEMENT_URL``, or each broker node's host on port 15672 with the broker's credentials."""
    if settings.rabbitmq_management_url:
        return [settings.rabbitmq_management_url]
    urls = []
    for node in nodes(settings.broker_url):
        broker = pika.URLParameters(node)
        credentials = broker.credentials
        userinfo = f"{quote(credentials.username, safe='')}:{quote(credentials.password, safe='')}@"
        urls.append(f"http://{userinfo}{broker.host}:{MANAGEMENT_PORT}")
    return list(dict.fromkeys(urls))  # nodes on one host share its port: ask it once


def collect(settings: Settings, engine: Engine) -> list[QueueStats]:
    """Every SPEC queue and every queue with failed jobs, sorted by name."""
    with engine.connect() as connection:
        stored: Counter[str] = Counter()
        for queue, _actor, count in failed_jobs.counts(connection):
            stored[queue] += count
        waited = waits.summaries(connection)
        paused = pauses.paused(connection)
    names = sorted(set(SPEC_QUEUES) | set(stored))
    try:
        raw = _from_management(settings)
    except requests.RequestException:
        by_amqp = _from_amqp(settings.broker_url, names, stored)
        return [_with_stored(by_amqp[name], waited, paused) for name in names]
    names = sorted(set(names) | {n for n in raw if not n.endswith((".DQ", ".XQ"))})
    return [_with_stored(_fold(name, raw, stored[name]), waited, paused) for name in names]


def _with_stored(
    stats: QueueStats, waited: dict[str, waits.WaitSummary], paused: dict[str, pauses.Pause]
) -> QueueStats:
    """``stats`` with what PostgreSQL knows of the queue: its waits and its pause."""
    summary, pause = waited.get(stats.name), paused.get(stats.name)
    if summary is not None:
        stats = replace(stats, wait_p50_seconds=summary.p50_seconds, wait_p95_seconds=summary.p95_seconds,
                        wait_messages=summary.messages)
    if pause is not None:
        stats = replace(stats, paused=True, paused_at=pause.paused_at.isoformat(), paused_by=pause.paused_by)
    return stats


def _from_management(settings: Settings) -> dict[str, dict[str, Any]]:
    """The queues of the broker's vhost from the first node whose management API answers."""
    urls = management_urls(settings)
    for url in urls[:-1]:
        try:
            return _queues_from(url, settings)
        except requests.RequestException:
            continue  # that node is down: any other node of the cluster knows every queue
    return _queues_from(urls[-1], settings)


def _queues_from(url: str, settings: Settings) -> dict[str, dict[str, Any]]:
    parts = urlsplit(url)
    auth = (parts.username or "guest", parts.password or "guest")
    # antrian.config refuses a management URL without a scheme or a host; an IPv6 host keeps its brackets
    hostname = parts.hostname or "localhost"
    host = (f"[{hostname}]" if ":" in hostname else hostname) + (f":{parts.port}" if parts.port else "")
    base = urlunsplit((parts.scheme, host, "", "", ""))
    vhost = quote(pika.URLParameters(nodes(settings.broker_url)[0]).virtual_host, safe="")
    response = requests.get(f"{base}/api/queues/{vhost}", auth=auth, timeout=MANAGEMENT_TIMEOUT_S,
                            params={"columns": "name,messages_ready,messages_unacknowledged,consumers,message_stats"})
    response.raise_for_status()
    return {queue["name"]: queue for queue in response.json()}


def _fold(name: str, raw: dict[str, dict[str, Any]], stored: int) -> QueueStats:
    queue, delayed, dead = raw.get(name, {}), raw.get(dq_name(name), {}), raw.get(xq_name(name), {})
    stats = queue.get("message_stats") or {}
    return QueueStats(
        name=name,
        ready=queue.get("messages_ready", 0),
        unacknowledged=queue.get("messages_unacknowledged", 0),
        delayed=delayed.get("messages_ready", 0) + delayed.get("messages_unacknowledged", 0),
        dead_lettered=stored + dead.get("messages_ready", 0),
        consumers=queue.get("consumers", 0),
        publish_rate=round(stats.get("publish_details", {}).get("rate", 0.0), 2),
        ack_rate=round(stats.get("ack_details", {}).get("rate", 0.0), 2),
        source="management",
    )


def _from_amqp(broker_url: str, names: list[str], stored: Counter[str]) -> dict[str, QueueStats]:
    stats: dict[str, QueueStats] = {}
    try:
        connection = pika.BlockingConnection(connection_parameters(broker_url))
    except AMQPError as exc:
        raise DependencyUnavailable(f"cannot reach the broker at {redact(broker_url)}: {exc!r}") from None
    try:
        for name in names:
            ready, consumers = _declared(connection, name)
            not_yet_stored, _ = _declared(connection, xq_name(name))
            stats[name] = QueueStats(
                name=name, ready=ready, unacknowledged=None, delayed=None,
                dead_lettered=stored[name] + not_yet_stored, consumers=consumers,
                publish_rate=None, ack_rate=None, source="amqp",
            )
    except AMQPError as exc:
        raise DependencyUnavailable(f"lost the broker at {redact(broker_url)}: {exc!r}") from None
    finally:
        if connection.is_open:
            connection.close()
    return stats


def _declared(connection: pika.BlockingConnection, queue: str) -> tuple[int, int]:
    """``(ready messages, consumers)`` of a queue by a passive declare; ``(0, 0)`` when it does not exist."""
    channel = connection.channel()
    try:
        ok = channel.queue_declare(queue, passive=True).method
    except ChannelClosedByBroker:  # 404: not declared yet
        return 0, 0
    channel.close()
    return ok.message_count, ok.consumer_count

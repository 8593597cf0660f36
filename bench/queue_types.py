"""Part (l): quorum queues against classic ones, on this machine's RabbitMQ node and on a 3-node cluster of the
bench's own (started beside it from the same rabbitmq-server, tests/cluster/helpers.py), measured in one run.

On each, for each queue type in turn (its queues deleted first, so each is declared afresh): a sync run end to end
through sync-api and sync-worker with ``QUEUE_TYPE`` set (POST until finished, fan-out included), the fan-out's
own confirmed publish rate (its log line), and the bare Dramatiq actor on a queue of the same type (its
messages enqueued first, timed from its first stored student to its last). The target: quorum costs at most 25%
of the classic rate end to end.
"""

from __future__ import annotations

import time

import dramatiq
import pika
from sqlalchemy import Engine, text

from antrian.amqp.connection import connection_parameters
from antrian.amqp.queue_types import TypedRabbitmqBroker, declarations
from antrian.cli.demo import FIRST_IDPERSON
from antrian.messages import QUEUES
from tests.cluster.helpers import private_cluster

from . import common
from .bare_actor import ACTOR as BARE_ACTOR
from .bare_actor import QUEUE as BARE_QUEUE

TYPES = ("classic", "quorum")


def run(engine: Engine, *, students: int, processes: int, threads: int, cluster: bool = True) -> dict:
    common.clear_data(engine)
    common.seed(engine, students)
    places = {"node": _on_node(engine, common.BROKER_URL, students=students, processes=processes, threads=threads)}
    if cluster:
        with private_cluster(nodes=3, management=False) as nodes:
            nodes.add_vhost(common.VHOST)
            places["cluster"] = _on_node(engine, nodes.url(common.VHOST), students=students, processes=processes,
                                         threads=threads)
    return {"students": students, "processes": processes, "threads": threads, **places}


def _on_node(engine: Engine, broker_url: str, *, students: int, processes: int, threads: int) -> dict:
    """Both queue types against ``broker_url`` (one node, or every node of a cluster)."""
    results: dict[str, dict] = {}
    timeout = 120 + students / 30
    env = {"BROKER_URL": broker_url}
    where = "cluster" if ";" in broker_url else "node"
    try:
        for queue_type in TYPES:
            _delete_queues(broker_url, (*QUEUES, BARE_QUEUE))
            upstream = common.start_school_api()
            web = common.start_sync_api(QUEUE_TYPE=queue_type, **env)
            antrian = _antrian(engine, web, upstream, queue_type, env, students=students, processes=processes,
                               threads=threads, timeout=timeout)
            _forget_payments(engine)
            bare = _bare(engine, upstream, queue_type, broker_url, students=students, processes=processes,
                         threads=threads, timeout=timeout)
            _forget_payments(engine)
            common.stop_all()
            results[queue_type] = {"antrian": antrian, "bare": bare}
            common.log(f"(l) {where}, {queue_type}: antrian {antrian['rate_per_s']}/s, bare {bare['rate_per_s']}/s")
    finally:
        common.stop_all()
        _delete_queues(broker_url, (*QUEUES, BARE_QUEUE))  # the other parts declare them as they are configured
    classic, quorum = results["classic"], results["quorum"]
    return {
        **results,
        "ratio_quorum_classic": round(quorum["antrian"]["rate_per_s"] / classic["antrian"]["rate_per_s"], 3),
        "ratio_bare_quorum_classic": round(quorum["bare"]["rate_per_s"] / classic["bare"]["rate_per_s"], 3),
        "ratio_antrian_bare": {t: round(results[t]["antrian"]["rate_per_s"] / results[t]["bare"]["rate_per_s"], 3)
                               for t in TYPES},
    }


def _antrian(engine: Engine, web: str, upstream: str, queue_type: str, env: dict[str, str], *, students: int,
             processes: int, threads: int, timeout: float) -> dict:
    worker = common.start_sync_worker(upstream, processes=processes, threads=threads, QUEUE_TYPE=queue_type, **env)
    started = time.perf_counter()
    run_id, _ = common.post_sync_run(web)
    row = common.wait_for_run(engine, run_id, timeout=timeout)
    wall = time.perf_counter() - started
    worker.stop()
    if row["processed"] != students or row["failed"]:
        raise RuntimeError(f"run {run_id} ended with processed={row['processed']} failed={row['failed']}")
    fanouts = common.fanout_lines(worker)
    return {"wall_s": round(wall, 2), "rate_per_s": round(students / wall, 1),
            "fanout_rate_per_s": fanouts[-1]["rate_per_s"] if fanouts else None}


def _bare(engine: Engine, upstream: str, queue_type: str, broker_url: str, *, students: int, processes: int,
          threads: int, timeout: float) -> dict:
    broker = TypedRabbitmqBroker(url=broker_url, queue_type=queue_type, confirm_delivery=False)
    try:
        broker.declare_queue(BARE_QUEUE, ensure=True)
    finally:
        broker.close()
    connection = _connect(broker_url)
    channel = connection.channel()
    channel.confirm_delivery()
    for start in range(0, students, 2000):  # confirmed in batches, as antrian's fan-out does
        for n in range(start, min(start + 2000, students)):
            body = dramatiq.Message(queue_name=BARE_QUEUE, actor_name=BARE_ACTOR, args=(FIRST_IDPERSON + n,),
                                    kwargs={}, options={}).encode()
            channel.basic_publish("", BARE_QUEUE, body, pika.BasicProperties(delivery_mode=2))
    connection.close()
    worker = common.Service(
        f"bare-dramatiq-{queue_type}",
        [str(common.BIN / "python"), "-m", "dramatiq", "bench.bare_actor", "--processes", str(processes),
         "--threads", str(threads)],
        common.base_env(UPSTREAM_BASE_URL=upstream, BARE_QUEUE_TYPE=queue_type, BROKER_URL=broker_url),
    ).start()
    common.wait_until(lambda: common.synced_window(engine).synced >= students, timeout=timeout, interval=0.25,
                      what=f"the bare actor on {queue_type} queues")
    worker.stop()
    window = common.synced_window(engine)
    return {"window_s": round(float(window.seconds), 2), "rate_per_s": round(window.synced / float(window.seconds), 1)}


def _forget_payments(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("UPDATE students SET pembayaran = NULL, pembayaran_synced_at = NULL"))
    common.vacuum(engine, "students")


def _connect(broker_url: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(connection_parameters(broker_url, timeout_s=10))


def _delete_queues(broker_url: str, queues) -> None:
    connection = _connect(broker_url)
    channel = connection.channel()
    for queue in queues:
        for name, _ in declarations(queue, queue_type="classic"):
            channel.queue_delete(name)
    connection.close()


def rows(part: dict, add) -> None:
    """Part (l)'s lines of the table."""
    for where in ("node", "cluster"):
        result = part.get(where)
        if not result or "ratio_quorum_classic" not in result:
            continue
        label = "1 node" if where == "node" else "3-node cluster"
        setup = f"{part['students']} students, {part['processes']}x{part['threads']}"
        for queue_type in TYPES:
            one = result[queue_type]
            add("l", f"{label}, {queue_type}: antrian end to end ({setup}); its fan-out; bare Dramatiq",
                f"{one['antrian']['rate_per_s']:.0f}/s; {one['antrian']['fanout_rate_per_s']}/s; "
                f"{one['bare']['rate_per_s']:.0f}/s")
        add("l", f"{label}: ratio quorum / classic, antrian end to end", f"{result['ratio_quorum_classic']:.3f}",
            ">= 0.75", result["ratio_quorum_classic"] >= 0.75)
        add("l", f"{label}: ratio quorum / classic, bare Dramatiq", f"{result['ratio_bare_quorum_classic']:.3f}",
            "(info)")
        add("l", f"{label}: ratio antrian / bare, classic and quorum",
            f"{result['ratio_antrian_bare']['classic']:.3f} / {result['ratio_antrian_bare']['quorum']:.3f}", "(info)")

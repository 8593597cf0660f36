"""The cluster tooling itself (tests/cluster/helpers.py): three running nodes, a quorum queue replicated on all three
that keeps its messages when its leader stops, and the node rejoining when it starts again."""

from __future__ import annotations

import pika
import pytest

from tests.cluster import Cluster

pytestmark = pytest.mark.cluster

QUEUE = "proof"
MESSAGES = [f"message-{number}".encode() for number in range(20)]


def publish(url: str, queue: str, bodies: list[bytes]) -> None:
    """Declare quorum queue ``queue`` and publish ``bodies`` to it, each confirmed by the broker."""
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
        for body in bodies:
            channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2), mandatory=True)


def consume_all(url: str, queue: str) -> list[bytes]:
    """Every message ``queue`` holds, got and acknowledged one by one."""
    bodies = []
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        channel = connection.channel()
        while True:
            method, _properties, body = channel.basic_get(queue)
            if method is None:
                return bodies
            bodies.append(body)
            channel.basic_ack(method.delivery_tag)


def test_the_cluster_has_three_running_nodes_that_all_see_each_other(cluster: Cluster):
    assert len(cluster.names) == 3
    for name in cluster.names:
        assert cluster.running_nodes(via=name) == set(cluster.names), name
    assert len(cluster.broker_url.split(";")) == 3 and cluster.node_urls == cluster.broker_url.split(";")


def test_a_quorum_queue_keeps_its_messages_when_its_leader_stops_and_the_node_rejoins(cluster: Cluster,
                                                                                    cluster_vhost: str):
    first = cluster.names[0]
    # Given a quorum queue declared through node 1, holding 20 confirmed messages
    publish(cluster.node_url(first, cluster_vhost), QUEUE, MESSAGES)
    assert cluster.queue_types(cluster_vhost) == {QUEUE: "quorum"}
    assert cluster.members(QUEUE, cluster_vhost) == set(cluster.names), "replicated on every node"
    leader = cluster.await_leader(QUEUE, cluster_vhost)

    # When its leader's node stops
    cluster.stop_node(leader)
    assert cluster.running_nodes() == set(cluster.names) - {leader}

    # Then another node leads it, and every message is still there, consumed through a node that does not lead it
    new_leader = cluster.await_leader(QUEUE, cluster_vhost, other_than=leader)
    [follower] = set(cluster.names) - {leader, new_leader}
    assert consume_all(cluster.node_url(follower, cluster_vhost), QUEUE) == MESSAGES

    # And the node starts again, rejoins the cluster and holds its replica again
    cluster.start_node(leader)
    assert cluster.running_nodes(via=leader) == set(cluster.names)
    assert cluster.members(QUEUE, cluster_vhost) == set(cluster.names)
    publish(cluster.node_url(leader, cluster_vhost), QUEUE, MESSAGES[:1])
    assert consume_all(cluster.node_url(new_leader, cluster_vhost), QUEUE) == MESSAGES[:1]


def test_a_killed_node_is_seen_gone_and_comes_back(cluster: Cluster):
    last = cluster.names[-1]
    cluster.stop_node(last, kill=True)
    assert cluster.running_nodes() == set(cluster.names) - {last}
    cluster.start_node(last)
    assert cluster.running_nodes(via=last) == set(cluster.names)

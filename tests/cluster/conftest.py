"""Fixtures of the cluster tests: a 3-node RabbitMQ cluster of this test process's own (tests/cluster/helpers.py).

The cluster starts once per test process (each pytest-xdist worker has its own, on its own ports and node
names) and is stopped and removed at the end; it never touches this machine's broker. Each test gets it
with every node running (``cluster``) and, if it asks, a vhost of its own (``cluster_vhost``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.cluster import Cluster, private_cluster
from tests.nodes import RABBITMQ_BIN
from tests.support import show_output_if_failed


@pytest.fixture(scope="session")
def rabbitmq_cluster() -> Iterator[Cluster]:
    """Three clustered nodes started by scripts/rabbitmq-cluster.sh, with the management plugin."""
    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        pytest.skip(f"the cluster tests start this machine's rabbitmq-server, and {RABBITMQ_BIN} has none "
                    "(apt-get install rabbitmq-server)")
    with private_cluster(nodes=3, management=True) as cluster:
        yield cluster


@pytest.fixture
def cluster(rabbitmq_cluster: Cluster, request) -> Iterator[Cluster]:
    """The session's cluster with every node running and clustered (a node a test stopped is started again)."""
    rabbitmq_cluster.ensure_running()
    yield rabbitmq_cluster
    show_output_if_failed(request, {f"RabbitMQ {rabbitmq_cluster!r}": rabbitmq_cluster.log})


@pytest.fixture
def cluster_vhost(cluster: Cluster, request) -> Iterator[str]:
    """A vhost of this test's own on the cluster (guest may do everything), deleted afterwards."""
    name = "test-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:100]
    with cluster.vhost(name) as vhost:
        yield vhost

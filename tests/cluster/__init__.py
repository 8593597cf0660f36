"""Tests on a 3-node RabbitMQ cluster; the helpers (``from tests.cluster import Cluster``) are in helpers.py."""

from tests.cluster.helpers import Cluster, ClusterError, private_cluster

__all__ = ["Cluster", "ClusterError", "private_cluster"]

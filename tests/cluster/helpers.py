"""A 3-node RabbitMQ cluster on loopback for tests that prove quorum queues, failover and stopped nodes.

:class:`Cluster` drives ``scripts/rabbitmq-cluster.sh`` (the same nodes `make cluster-up` starts) and asks
the nodes themselves what they see. :func:`private_cluster` gives a test session a cluster of its own, on
ports and node names no other session (another pytest-xdist worker, another engineer's run) holds:

    with private_cluster() as cluster, cluster.vhost("failover") as vhost:
        url = cluster.url(vhost)                       # "amqp://...:6041/failover;...:6042/...;...:6043/..."
        leader = cluster.leader("sync-pembayaran", vhost)
        cluster.stop_node(leader)                      # returns once the others see it gone
        cluster.await_leader("sync-pembayaran", vhost, other_than=leader)
        cluster.start_node(leader)                     # returns once it is back in the cluster

``conftest.py`` beside this file wraps it as the session fixture ``rabbitmq_cluster`` and the per-test
``cluster`` (every node running) and ``cluster_vhost`` (a vhost of the test's own).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from filelock import FileLock, Timeout

from tests.nodes import RABBITMQ_BIN, RABBITMQ_HOME
from tests.support import ROOT

#: The script that starts, joins and stops the nodes (bash; its header explains ports and folders).
SCRIPT = ROOT / "scripts" / "rabbitmq-cluster.sh"
#: Where the script keeps each node's data, logs and configuration (git-ignored).
CLUSTER_DIR = ROOT / "var" / "rabbitmq-cluster"
#: Seconds the script may take to start and cluster the nodes (a loaded 2-core machine: 30-60 s).
START_TIMEOUT_S = 180
#: :func:`private_cluster`'s base ports: AMQP base+i, management base+10000+i, distribution base+20000+i, all
#: below Linux's ephemeral range (32768-), where a client's outgoing port could take one.
PRIVATE_BASE_PORTS = range(6000, 12000, 10)


class ClusterError(RuntimeError):
    """Raised when a node does not start, stop, join or answer in time."""


class Cluster:
    """The nodes ``<prefix>1@localhost`` … of ``scripts/rabbitmq-cluster.sh``, and what they say.

    Parameters:
      nodes(int): how many nodes (3).
      prefix(str): the node names' prefix (``q``: ``q1@localhost``, ``q2@localhost``, ``q3@localhost``).
      base_port(int): node i's AMQP port is ``base_port + i`` (5681…), its management port
        ``base_port + 10000 + i`` and its Erlang distribution port ``base_port + 20000 + i``.
      directory(Path): where the nodes' folders are (``var/rabbitmq-cluster/``).
      management(bool): whether the nodes run the management plugin.
    """

    def __init__(self, *, nodes: int = 3, prefix: str = "q", base_port: int = 5680,
                 directory: Path = CLUSTER_DIR, management: bool = True) -> None:
        self.size = nodes
        self.prefix = prefix
        self.base_port = base_port
        self.directory = directory
        self.management = management
        #: Nodes this object stopped and has not started again: rabbitmqctl is not sent to them by default.
        self._down: set[str] = set()

    def __repr__(self) -> str:
        return f"Cluster({', '.join(self.names)})"

    # -- names and addresses -------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """The Erlang node names, ``q1@localhost`` first."""
        return [f"{self.prefix}{i}@localhost" for i in range(1, self.size + 1)]

    def port(self, name: str) -> int:
        """The AMQP port of node ``name`` on 127.0.0.1."""
        return self.base_port + self._index(name)

    def management_port(self, name: str) -> int:
        return self.base_port + 10000 + self._index(name)

    def node_url(self, name: str, vhost: str = "/") -> str:
        """One node's AMQP URL (user guest) for ``vhost``."""
        return f"amqp://guest:guest@127.0.0.1:{self.port(name)}/{quote(vhost, safe='')}"

    @property
    def node_urls(self) -> list[str]:
        """Each node's AMQP URL for the default vhost, in the order of :attr:`names`."""
        return [self.node_url(name) for name in self.names]

    def url(self, vhost: str = "/") -> str:
        """antrian's ``BROKER_URL`` for ``vhost``: every node's URL, ``;``-separated."""
        return ";".join(self.node_url(name, vhost) for name in self.names)

    @property
    def broker_url(self) -> str:
        """antrian's ``BROKER_URL`` naming every node (the default vhost), as the script prints it."""
        return self.url()

    def management_url(self, name: str | None = None) -> str:
        """``RABBITMQ_MANAGEMENT_URL`` for node ``name`` (the first running node by default)."""
        return f"http://guest:guest@127.0.0.1:{self.management_port(name or self._any_running())}"

    def folder(self, name: str) -> Path:
        """Node ``name``'s folder: its data (``mnesia/``), logs (``log/``), configuration and ``console.log``."""
        return self.directory / name.split("@")[0]

    # -- the whole cluster ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the nodes that are down and wait until all run in one cluster (a running cluster is kept)."""
        self._script("start", timeout=START_TIMEOUT_S + 60)
        self._down.clear()

    def stop(self) -> None:
        """Stop every node and remove its folder."""
        self._script("stop", timeout=120)
        self._down.clear()

    def status(self) -> str:
        """``rabbitmqctl cluster_status`` as the first running node sees it."""
        return self._script("status", timeout=60)

    def running_nodes(self, *, via: str | None = None) -> set[str]:
        """The nodes that node ``via`` (the first running one by default) sees running in its cluster."""
        status = json.loads(self.rabbitmqctl("cluster_status", "--formatter", "json", node=via))
        return set(status["running_nodes"])

    def ensure_running(self) -> None:
        """Every node running and clustered: start what a previous test left stopped."""
        try:
            if self.running_nodes() == set(self.names):
                self._down.clear()
                return
        except ClusterError:
            pass
        self.start()

    # -- one node ------------------------------------------------------------------------------------------
    def stop_node(self, name: str, *, kill: bool = False, timeout: float = 60) -> None:
        """Take node ``name`` away: its OS process ends (``rabbitmqctl stop``, or SIGKILL with ``kill``) and
        its data stays. Returns once the process is gone and every other running node sees it gone."""
        self._index(name)
        if kill:
            pid = int((self.folder(name) / "node.pid").read_text().strip())
            os.kill(pid, signal.SIGKILL)
            _wait(lambda: not _alive(pid), timeout, f"{name} (pid {pid}) still alive after SIGKILL")
        else:
            self._script("stop-node", name, timeout=timeout + 30)
        self._down.add(name)
        for other in self.names:
            if other not in self._down:
                _wait(lambda other=other: name not in self.running_nodes(via=other), timeout,
                      f"{other} still sees {name} running")

    def start_node(self, name: str, *, timeout: float = START_TIMEOUT_S) -> None:
        """Start node ``name`` again from its data; returns once it runs and every running node lists it."""
        self._index(name)
        self._script("start-node", name, timeout=timeout + 30)
        self._down.discard(name)
        for other in self.names:
            if other not in self._down:
                _wait(lambda other=other: name in self.running_nodes(via=other), timeout,
                      f"{other} does not see {name} running")

    def log(self, name: str | None = None) -> str:
        """The end of each node's console and log files (or of node ``name``'s), for a failed test's output."""
        parts = []
        for node in [name] if name else self.names:
            folder = self.folder(node)
            for path in [folder / "console.log", *sorted((folder / "log").glob("*.log"))]:
                if path.exists():
                    parts.append(f"== {node} {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    # -- asking the nodes ----------------------------------------------------------------------------------
    def rabbitmqctl(self, *args: str, node: str | None = None, timeout: float = 60, check: bool = True) -> str:
        """``rabbitmqctl -q -n NODE ARGS`` (NODE: the first node not stopped here); its standard output.

        Raises :class:`ClusterError` when it fails and ``check``."""
        target = node or self._any_running()
        argv = [str(RABBITMQ_BIN / "rabbitmqctl"), "-q", "-n", target, *args]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": RABBITMQ_HOME, "LANG": "C.UTF-8",
               "LC_ALL": "C.UTF-8", "ERL_EPMD_ADDRESS": "127.0.0.1",
               "RABBITMQ_CONF_ENV_FILE": str(self.folder(target) / "rabbitmq-env.conf")}
        try:
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(f"{' '.join(argv)} did not answer in {timeout}s") from exc
        if check and done.returncode != 0:
            raise ClusterError(f"{' '.join(argv)} failed ({done.returncode}): {done.stdout}{done.stderr}")
        return done.stdout

    def queues(self, vhost: str = "/", *, node: str | None = None) -> list[dict]:
        """Each queue of ``vhost`` as ``list_queues`` reports it: ``name``, ``type``, ``leader``, ``members``,
        ``online`` (quorum queues), ``messages``."""
        listed = self.rabbitmqctl("list_queues", "-p", vhost, "name", "type", "leader", "members", "online",
                                  "messages", "--formatter", "json", node=node)
        return json.loads(listed or "[]")

    def queue(self, name: str, vhost: str = "/", *, node: str | None = None) -> dict:
        found = [queue for queue in self.queues(vhost, node=node) if queue["name"] == name]
        if not found:
            raise ClusterError(f"no queue {name!r} in vhost {vhost!r}")
        return found[0]

    def queue_types(self, vhost: str = "/") -> dict[str, str]:
        """Each queue of ``vhost``: its type (``quorum``, ``classic``, ``stream``)."""
        return {queue["name"]: queue["type"] for queue in self.queues(vhost)}

    def leader(self, queue: str, vhost: str = "/") -> str:
        """The node leading quorum queue ``queue`` now (empty when it has none)."""
        return str(self.queue(queue, vhost)["leader"])

    def members(self, queue: str, vhost: str = "/") -> set[str]:
        """The nodes holding a replica of quorum queue ``queue``."""
        return set(self.queue(queue, vhost)["members"])

    def await_leader(self, queue: str, vhost: str = "/", *, other_than: str | None = None,
                     timeout: float = 30) -> str:
        """Wait until quorum queue ``queue`` has a leader (other than ``other_than``) on a running node."""
        def elected() -> str | None:
            leader = self.leader(queue, vhost)
            return leader if leader and leader != other_than and leader not in self._down else None
        return _wait(elected, timeout, f"{queue} in {vhost} has no new leader")

    # -- vhosts --------------------------------------------------------------------------------------------
    def add_vhost(self, name: str) -> None:
        """Create vhost ``name`` (replaced if it exists), where ``guest`` may do everything."""
        self.delete_vhost(name)
        self.rabbitmqctl("add_vhost", name)
        self.rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")

    def delete_vhost(self, name: str) -> None:
        self.rabbitmqctl("delete_vhost", name, check=False)

    @contextmanager
    def vhost(self, name: str) -> Iterator[str]:
        """A fresh vhost ``name`` for the block, deleted after it."""
        self.add_vhost(name)
        try:
            yield name
        finally:
            self.delete_vhost(name)

    # -- helpers -------------------------------------------------------------------------------------------
    def _index(self, name: str) -> int:
        if name not in self.names:
            raise ValueError(f"{name!r} is no node of {self!r}")
        return self.names.index(name) + 1

    def _any_running(self) -> str:
        for name in self.names:
            if name not in self._down:
                return name
        raise ClusterError(f"every node of {self!r} is stopped")

    def _script(self, *args: str, timeout: float) -> str:
        env = {**os.environ, "CLUSTER_NODES": str(self.size), "CLUSTER_PREFIX": self.prefix,
               "CLUSTER_BASE_PORT": str(self.base_port), "CLUSTER_DIR": str(self.directory),
               "CLUSTER_MANAGEMENT": "true" if self.management else "false", "CLUSTER_TIMEOUT": str(START_TIMEOUT_S)}
        try:
            done = subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout,
                                  check=False)
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(f"rabbitmq-cluster.sh {' '.join(args)} did not finish in {timeout}s") from exc
        if done.returncode != 0:
            raise ClusterError(f"rabbitmq-cluster.sh {' '.join(args)} failed ({done.returncode}):\n"
                               f"{done.stdout}{done.stderr}\n{self.log()}")
        return done.stdout


@contextmanager
def private_cluster(*, nodes: int = 3, management: bool = False) -> Iterator[Cluster]:
    """A cluster of this process's own, stopped and removed afterwards.

    Its base port is one of :data:`PRIVATE_BASE_PORTS` whose every port is free and whose lock file
    (``/tmp/antrian-rabbitmq-cluster-<base>.lock``) this process holds until the end, so that parallel
    test processes and sessions never share nodes; the node names carry the base (``t6040q1@localhost``).
    """
    with _claimed_base_port(nodes) as base:
        cluster = Cluster(nodes=nodes, prefix=f"t{base}q", base_port=base, management=management)
        if any(cluster.folder(name).exists() for name in cluster.names):
            cluster.stop()  # what a killed session with the same base left behind
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()


@contextmanager
def _claimed_base_port(nodes: int) -> Iterator[int]:
    candidates = list(PRIVATE_BASE_PORTS)
    random.shuffle(candidates)
    for base in candidates:
        lock = FileLock(f"/tmp/antrian-rabbitmq-cluster-{base}.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue
        try:
            ports = [base + offset + i for offset in (0, 10000, 20000) for i in range(1, nodes + 1)]
            if all(_port_free(port) for port in ports):
                yield base
                return
        finally:
            lock.release()
    raise ClusterError("no free base port for a private RabbitMQ cluster")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait(condition, timeout: float, failure: str):
    """Poll ``condition`` until it returns something truthy (returned) or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = condition()
        except ClusterError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise ClusterError(f"{failure} after {timeout}s")
        time.sleep(0.5)

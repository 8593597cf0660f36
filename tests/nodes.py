"""Private servers for tests that break them: a RabbitMQ node and a PostgreSQL instance of the test's own.

A fault test (a memory alarm, a full connection table) must not do it to this machine's shared broker or
database, which other sessions use at the same time. :func:`rabbitmq_node` and :func:`postgresql_instance`
start a server of the test's own on free loopback ports, in temporary folders, and remove it all afterwards:

    with rabbitmq_node() as node, postgresql_instance(max_connections=20) as pg:
        env = base_env(BROKER_URL=node.url, DATABASE_URL=pg.url)
        node.ctl("set_vm_memory_high_watermark", "0.000001")

A :class:`RabbitNode` knows its Erlang node name and distribution port, so several can be joined into a cluster
(``node.ctl("stop_app")``, ``node.ctl("join_cluster", first.name)``, ``node.ctl("start_app")``).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from tests.support import free_port, free_ports, live_queue_counts

#: Debian's RabbitMQ scripts, run directly (``/usr/sbin/rabbitmq-server`` would log into the shared /var/log).
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
#: Where the Erlang cookie is: ``rabbitmqctl`` and the nodes it talks to must share it.
RABBITMQ_HOME = "/var/lib/rabbitmq"
#: Seconds a server may take to start (a loaded 2-core machine starts RabbitMQ in 5-15 s).
START_TIMEOUT_S = 90.0


def _owned_dir(prefix: str, user: str) -> Path:
    """A fresh temporary folder that ``user`` owns (the servers drop to their own OS user)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    shutil.chown(path, user=user, group=user)
    return path


@dataclass
class RabbitNode:
    """A running private RabbitMQ node (see :func:`rabbitmq_node`).

    Attributes:
      name(str): the Erlang node name, e.g. ``fault-40123@localhost`` (for ``rabbitmqctl -n`` and clustering).
      port(int): its AMQP port on 127.0.0.1; ``url`` is ``amqp://guest:guest@127.0.0.1:PORT/``.
      dist_port(int): its Erlang distribution port.
      base(Path): the folder holding its data, logs and configuration.
    """

    name: str
    port: int
    dist_port: int
    base: Path
    env: dict[str, str] = field(repr=False)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def ctl(self, *args: str, timeout: float = 60, check: bool = True) -> str:
        """Run ``rabbitmqctl -n NODE ARGS`` and return its output (raises on failure when ``check``)."""
        return _run([str(RABBITMQ_BIN / "rabbitmqctl"), "-q", "-n", self.name, *args], self.env, timeout, check)

    def diagnostics(self, *args: str, timeout: float = 60, check: bool = True) -> str:
        """Run ``rabbitmq-diagnostics -n NODE ARGS`` and return its output."""
        return _run([str(RABBITMQ_BIN / "rabbitmq-diagnostics"), "-q", "-n", self.name, *args], self.env, timeout,
                    check)

    def log(self) -> str:
        """What the node wrote to its console and log files, for a failed test's output."""
        parts = []
        for path in sorted((self.base / "log").glob("*.log")) + [self.base / "console.log"]:
            if path.exists():
                parts.append(f"== {path.name}\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)

    def queue_counts(self, vhost: str = "/") -> dict[str, tuple[int, int]]:
        """Each queue of ``vhost``: (ready, unacknowledged), as they are now (``tests.support.live_queue_counts``)."""
        return live_queue_counts(self.ctl, f"{self.url}{quote(vhost, safe='')}", vhost)


def _run(argv: list[str], env: dict[str, str], timeout: float, check: bool) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stdout}{done.stderr}")
    return done.stdout


@contextmanager
def rabbitmq_node(name: str | None = None) -> Iterator[RabbitNode]:
    """Start a private RabbitMQ node on free ports beside the machine's own; stop and remove it afterwards.

    The node runs ``rabbitmq-server`` in the foreground as the ``rabbitmq`` user, with its own node name,
    AMQP and distribution ports, data, log and configuration files: ``RABBITMQ_CONF_ENV_FILE`` points at a
    file of its own, since ``/etc/rabbitmq/rabbitmq-env.conf`` sets ``NODENAME`` and would otherwise win. No
    plugin is enabled; the user ``guest`` may connect over loopback as usual.

    Parameters:
      name(str | None): the short node name (default ``fault-<port>``); the host part is ``localhost``.
    """
    port, dist_port = free_ports(2)
    base = _owned_dir("antrian-rabbit-", "rabbitmq")
    node = RabbitNode(name=f"{name or f'fault-{port}'}@localhost", port=port, dist_port=dist_port, base=base, env={})
    for sub in ("mnesia", "log"):
        (base / sub).mkdir()
        shutil.chown(base / sub, user="rabbitmq", group="rabbitmq")
    (base / "rabbitmq.conf").write_text(
        f"listeners.tcp.local = 127.0.0.1:{port}\nlog.console = true\nlog.console.level = warning\n"
    )
    (base / "enabled_plugins").write_text("[].\n")
    (base / "rabbitmq-env.conf").write_text("# this node's own: /etc/rabbitmq/rabbitmq-env.conf must not apply\n")
    node.env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": RABBITMQ_HOME,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "RABBITMQ_NODENAME": node.name,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_PID_FILE": str(base / "node.pid"),
        "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
    }
    console = open(base / "console.log", "wb")  # noqa: SIM115 - closed right after the start
    try:
        node.process = subprocess.Popen(
            [str(RABBITMQ_BIN / "rabbitmq-server")], env=node.env, cwd=base, user="rabbitmq", group="rabbitmq",
            stdout=console, stderr=subprocess.STDOUT, start_new_session=True,
        )
    finally:
        console.close()
    try:
        _await_rabbit(node)
        yield node
    finally:
        _stop_rabbit(node)
        shutil.rmtree(base, ignore_errors=True)


def _await_rabbit(node: RabbitNode) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        assert node.process is not None
        if node.process.poll() is not None:
            raise RuntimeError(f"RabbitMQ node {node.name} exited with {node.process.returncode}:\n{node.log()}")
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"RabbitMQ node {node.name} did not start in {START_TIMEOUT_S}s:\n{node.log()}")
        try:
            # await_startup fails at once while the node's Erlang VM is not up yet: try again until it is.
            node.ctl("await_startup", "--timeout", str(int(max(left, 1))), timeout=left + 10)
            return
        except (RuntimeError, subprocess.TimeoutExpired):
            time.sleep(0.5)


def _stop_rabbit(node: RabbitNode) -> None:
    if node.process is None or node.process.poll() is not None:
        return
    try:
        node.ctl("stop", timeout=60, check=False)
        node.process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(node.process.pid, 9)
        node.process.wait(10)


@dataclass
class PostgresInstance:
    """A running private PostgreSQL instance (see :func:`postgresql_instance`).

    Attributes:
      port(int): its port on 127.0.0.1.
      data(Path): its data folder.
      max_connections(int): PostgreSQL's ``max_connections`` (superusers such as ``postgres`` may use them all).
    """

    port: int
    data: Path
    max_connections: int
    bin: Path = field(repr=False)

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of ``database`` as the superuser ``postgres`` (trust on loopback)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def log(self) -> str:
        path = self.data.parent / "server.log"
        return path.read_text(errors="replace")[-6000:] if path.exists() else ""

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its URL."""
        _run([str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres",
              "-v", "ON_ERROR_STOP=1", "-c", f'CREATE DATABASE "{name}"'], dict(os.environ), 60, True)
        return self.url(name)


def postgresql_bin() -> Path:
    """The newest installed PostgreSQL's binaries (``/usr/lib/postgresql/<version>/bin``)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    return Path(found[-1]).parent


@contextmanager
def postgresql_instance(*, max_connections: int = 20) -> Iterator[PostgresInstance]:
    """Start a private PostgreSQL on a free loopback port; stop and remove it afterwards.

    ``initdb`` runs as the ``postgres`` OS user into a temporary folder, trust authentication, listening on
    127.0.0.1 only (its socket in that folder too), with ``max_connections`` as given, so that a test can
    fill its connection table without touching anyone else's.
    """
    binaries = postgresql_bin()
    base = _owned_dir("antrian-pg-", "postgres")
    data = base / "data"
    port = free_port()
    instance = PostgresInstance(port=port, data=data, max_connections=max_connections, bin=binaries)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    _as_postgres([str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync"], env, base)
    options = (f"-p {port} -c listen_addresses=127.0.0.1 -k {base} -c max_connections={max_connections} "
               "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=16MB")
    try:
        _as_postgres([str(binaries / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-o", options,
                      "-w", "-t", str(int(START_TIMEOUT_S)), "start"], env, base)
        yield instance
    finally:
        _as_postgres([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], env, base,
                     check=False)
        shutil.rmtree(base, ignore_errors=True)


def _as_postgres(argv: list[str], env: dict[str, str], cwd: Path, *, check: bool = True) -> None:
    done = subprocess.run(argv, env=env, cwd=cwd, user="postgres", group="postgres", capture_output=True, text=True,
                          timeout=START_TIMEOUT_S + 30, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stdout}{done.stderr}")

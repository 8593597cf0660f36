"""A network namespace joined to this machine by a link whose packets the test can drop and delay.

This machine's kernel has no ``sch_netem`` (``tc qdisc add ... netem`` answers "Specified qdisc kind
is unknown"), so the link is made of two TUN devices, one in the namespace and one outside, and the
test process moves every IP packet between them: that is where packets are lost (``loss``) or held
back (``delay`` ± ``jitter``, reordering them as netem does), like netem on a veth. Both ends are the
kernel's own TCP stacks: a lost packet is retransmitted by TCP, a long blackout makes AMQP heartbeats
go missing, for real. Only packets to or from the ports given to :meth:`Link.impair` suffer;
:meth:`Link.cut` drops every packet both ways (the host's cable pulled out) until :meth:`Link.restore`.

Addresses are 10.213.X.1 (here) and 10.213.X.2 (the namespace), X random and checked unused; the
namespace, both devices and their addresses are removed when the ``with`` block ends, however it ends.
PostgreSQL and RabbitMQ listen on 127.0.0.1 only (and RabbitMQ lets ``guest`` in from loopback only),
so a :class:`Relay` bound to 10.213.X.1 forwards to them over loopback.
"""

from __future__ import annotations

import fcntl
import heapq
import os
import random
import select
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

_TUNSETIFF = 0x400454CA
_IFF_TUN, _IFF_NO_PI = 0x0001, 0x1000


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _addresses_in_use() -> str:
    return subprocess.run(["ip", "-o", "addr"], check=True, capture_output=True, text=True, timeout=30).stdout


def _open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH22x", name.encode(), _IFF_TUN | _IFF_NO_PI))
    return fd


def _ports(packet: bytes) -> tuple[int, int] | None:
    """A TCP packet's (source, destination) ports; None for anything else."""
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_TCP:
        return None
    start = (packet[0] & 0x0F) * 4
    if len(packet) < start + 4:
        return None
    source, destination = struct.unpack_from("!HH", packet, start)
    return source, destination


class Link:
    """The packet mover between the two TUN devices, with its impairment (none at first)."""

    def __init__(self, outside_fd: int, inside_fd: int) -> None:
        self._fds = (outside_fd, inside_fd)
        self._ports: frozenset[int] = frozenset()
        self._loss = 0.0
        self._delay_s = self._jitter_s = 0.0
        self._cut = False
        self.dropped = 0
        self._queue: list[tuple[float, int, int, bytes]] = []
        self._sequence = 0
        self._due = threading.Condition()
        self._stopped = threading.Event()
        self._threads = [
            threading.Thread(target=self._move, args=(outside_fd, inside_fd), daemon=True),
            threading.Thread(target=self._move, args=(inside_fd, outside_fd), daemon=True),
            threading.Thread(target=self._release, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def impair(self, *, ports: set[int], loss: float = 0.0, delay_ms: float = 0.0, jitter_ms: float = 0.0) -> None:
        """From now on, TCP packets from or to ``ports`` are lost with probability ``loss`` (1.0: a blackout),
        the others delayed by ``delay_ms`` ± ``jitter_ms`` (uniformly)."""
        self._ports = frozenset(ports)
        self._loss, self._delay_s, self._jitter_s = loss, delay_ms / 1000, jitter_ms / 1000

    def heal(self) -> None:
        """No more loss or delay (packets already held back still go, when due)."""
        self.impair(ports=set())

    def cut(self) -> None:
        """From now on every packet, whatever its protocol and ports, is lost both ways: the host is cut off."""
        self._cut = True

    def restore(self) -> None:
        """Packets go through again (subject to :meth:`impair` as before the cut)."""
        self._cut = False

    def _move(self, source: int, sink: int) -> None:
        while not self._stopped.is_set():
            readable, _, _ = select.select([source], [], [], 0.2)
            if not readable:
                continue
            try:
                packet = os.read(source, 65536)
            except OSError:
                return
            if self._cut:
                self.dropped += 1
                continue
            ports = _ports(packet) if self._ports else None
            if ports is None or self._ports.isdisjoint(ports):
                self._write(sink, packet)
            elif random.random() < self._loss:
                self.dropped += 1
            elif self._delay_s or self._jitter_s:
                due = time.monotonic() + max(0.0, self._delay_s + random.uniform(-self._jitter_s, self._jitter_s))
                with self._due:
                    self._sequence += 1
                    heapq.heappush(self._queue, (due, self._sequence, sink, packet))
                    self._due.notify()
            else:
                self._write(sink, packet)

    def _release(self) -> None:
        while not self._stopped.is_set():
            with self._due:
                wait = self._queue[0][0] - time.monotonic() if self._queue else 0.2
                if wait > 0:
                    self._due.wait(min(wait, 0.2))
                    continue
                _, _, sink, packet = heapq.heappop(self._queue)
            self._write(sink, packet)

    @staticmethod
    def _write(sink: int, packet: bytes) -> None:
        with suppress(OSError):  # the device is going away: the packet is lost, as on a cable pulled out
            os.write(sink, packet)

    def stop(self) -> None:
        self._stopped.set()
        with self._due:
            self._due.notify_all()
        for thread in self._threads:
            thread.join(5)


class Namespace:
    """A network namespace reached through a :class:`Link`: ``host`` is this side's address, ``address`` its own."""

    def __init__(self, name: str, host: str, address: str, link: Link) -> None:
        self.name, self.host, self.address, self.link = name, host, address, link

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside the namespace (``ip netns exec`` execs it: the pid is the command's own)."""
        return ["ip", "netns", "exec", self.name, *argv]


@contextmanager
def namespace() -> Iterator[Namespace]:
    """A fresh namespace and its impairable link; everything it made is removed afterwards."""
    if shutil.which("ip") is None:
        raise AssertionError("`ip` (iproute2) is needed for the network fault tests: apt-get install iproute2")
    used = _addresses_in_use()
    octet = random.choice([x for x in range(256) if f"10.213.{x}." not in used])
    tag = f"{octet:02x}{os.getpid() % 4096:03x}"
    name, outside, inside = f"antrian-pl-{tag}", f"tpo{tag}", f"tpi{tag}"
    host, address = f"10.213.{octet}.1", f"10.213.{octet}.2"
    fds: list[int] = []
    link: Link | None = None
    _ip("netns", "add", name)
    try:
        fds = [_open_tun(outside), _open_tun(inside)]
        _ip("link", "set", inside, "netns", name)
        _ip("addr", "add", host, "peer", address, "dev", outside)
        _ip("link", "set", outside, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", name, "addr", "add", address, "peer", host, "dev", inside)
        _ip("-n", name, "link", "set", inside, "up")
        link = Link(fds[0], fds[1])
        yield Namespace(name, host, address, link)
    finally:
        if link is not None:
            link.stop()
        for fd in fds:  # a TUN device without IFF_PERSIST goes away with its last descriptor
            os.close(fd)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", outside], capture_output=True, timeout=30)


class Relay:
    """Forwards TCP connections made to ``host``:``port`` (a free port) to 127.0.0.1:``target_port``.

    Closing either side closes the other, so a connection RabbitMQ drops is dropped towards the worker too.
    """

    def __init__(self, host: str, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server((host, 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: set[socket.socket] = set()
        self._upstreams: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets |= {client, upstream}
                self._upstreams.add(upstream)
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        with self._lock:
            self._sockets -= {source, sink}
            self._upstreams -= {source, sink}

    def upstream_ports(self) -> set[int]:
        """The local ports of the relay's open connections to the target: the peer ports its server sees
        (RabbitMQ names a connection ``127.0.0.1:PORT -> 127.0.0.1:5672``), so a test can tell them apart."""
        with self._lock:
            upstreams = list(self._upstreams)
        ports = set()
        for sock in upstreams:
            with suppress(OSError):
                ports.add(sock.getsockname()[1])
        return ports

    def close(self) -> None:
        with suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

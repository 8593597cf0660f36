"""A TCP proxy on loopback that can hold back everything a client sends: to kill a worker before its ack lands."""

from __future__ import annotations

import socket
import threading

from tests.support import free_port


class FreezableProxy:
    """Forwards 127.0.0.1:``port`` to ``target_port``; after :meth:`freeze`, nothing more reaches the target.

    :meth:`cut` then closes every connection without forwarding what was held back, as if the client
    died before its bytes left the machine.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._frozen = threading.Event()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            while data := source.recv(65536):
                if from_client and self._frozen.is_set():
                    continue  # held back: never delivered
                sink.sendall(data)
        except OSError:
            pass

    def freeze(self) -> None:
        self._frozen.set()

    def cut(self) -> None:
        for sock in self._sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self._sockets.clear()

    def close(self) -> None:
        """Stop accepting (a client reconnecting meanwhile is refused), then close every connection."""
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        except OSError:
            pass
        self._listener.close()
        self._acceptor.join(5)
        self.cut()

"""A TCP proxy on loopback that records every byte a member sends to the coordinator
(and counts what it receives). The federation tests use it to search a member's traffic,
the federation part of the benchmark (bench/parts/federation.py) to measure bytes on
the wire."""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

CHUNK = 1 << 16


class RecordingProxy:
    """Listens on a free loopback port and forwards each connection to ``upstream``;
    :attr:`sent` holds everything the clients sent, in order per connection, and
    :attr:`received_bytes` counts what they got back."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._lock = threading.Lock()
        self._sent: list[bytes] = []
        self._received = 0
        self._sockets: list[socket.socket] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def sent(self) -> bytes:
        """All bytes received from clients so far."""
        with self._lock:
            return b"".join(self._sent)

    @property
    def received_bytes(self) -> int:
        """Bytes sent back to clients so far."""
        with self._lock:
            return self._received

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stopped.set()
        self._server.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):  # as gRPC's own sockets: no Nagle delays
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, record: bool) -> None:
        try:
            while data := source.recv(CHUNK):
                with self._lock:
                    if record:
                        self._sent.append(data)
                    else:
                        self._received += len(data)
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

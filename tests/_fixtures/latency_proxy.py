"""A TCP proxy on a free loopback port that delays what it forwards: "Redis 30 ms away".

Each byte the client sends reaches the upstream ``delay_s`` later (replies come back at once),
so one request-reply round trip takes ``delay_s`` more, while pipelined or concurrent requests
overlap as they would over a real network (the delay is a deadline per chunk, not a sleep per
chunk).  Loopback only; started and stopped by the test.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time


class LatencyProxy:
    def __init__(self, upstream_port: int, delay_s: float = 0.03) -> None:
        self.upstream_port = upstream_port
        self.delay_s = delay_s
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(256)
        self.port = int(self._listener.getsockname()[1])
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.connections = 0
        """Connections accepted so far (what a client opened through the proxy)."""
        self.writes = 0
        """Chunks clients sent so far: a pipeline of many commands is one, a command per
        round trip is one each."""
        self._thread = threading.Thread(target=self._accept, name="latency-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> LatencyProxy:
        self._thread.start()
        return self

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.settimeout(None)
            with self._lock:
                self.connections += 1
                self._sockets += [client, upstream]
            delayed: queue.Queue[tuple[float, bytes] | None] = queue.Queue()
            threading.Thread(target=self._read, args=(client, delayed), daemon=True).start()
            threading.Thread(target=self._send, args=(delayed, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _read(self, source: socket.socket, out: queue.Queue[tuple[float, bytes] | None]) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = source.recv(65536)
                if not data:
                    break
                with self._lock:
                    self.writes += 1
                out.put((time.monotonic() + self.delay_s, data))
        out.put(None)

    def _send(self, items: queue.Queue[tuple[float, bytes] | None], target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while (item := items.get()) is not None:
                due, data = item
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    def _pipe(self, source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.close()

"""A real 3-master Redis Cluster: three ``redis-server --cluster-enabled yes`` processes on free
loopback ports, joined by ``redis-cli --cluster create``; one node can be restarted on its port
(it rejoins from its ``nodes.conf``).  Started and stopped by pid.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

from tests._fixtures.redis_proc import RedisProcess


def free_cluster_port() -> int:
    """A free loopback port whose cluster bus port (+10000) is free too."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port > 55535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _command(port: int, *words: str, timeout: float = 2.0) -> bytes:
    """One inline command to ``127.0.0.1:port``; the raw reply (enough for status checks)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(" ".join(words).encode() + b"\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
            if reply.startswith(b"$"):  # a bulk string: read until its announced length
                head, _, body = reply.partition(b"\r\n")
                while len(body) < int(head[1:]) + 2:
                    more = s.recv(65536)
                    if not more:
                        break
                    body += more
                return body
        return reply


BUDGET_SAFE = (
    "--appendonly", "yes",
    "--appendfsync", "everysec",
    "--maxmemory-policy", "volatile-lru",
)  # fmt: skip
"""The settings docs/scaling.md asks of a Redis that holds budgets: an append-only file, and
eviction of keys with a TTL only (cache entries, never budget state)."""


def cluster_node(port: int, extra_args: tuple[str, ...] = ()) -> RedisProcess:
    """One node: a ``redis-server`` with cluster mode on, its ``nodes.conf`` in its own dir."""
    return RedisProcess(
        port,
        extra_args=(
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", "2000",
            *extra_args,
        ),
    )  # fmt: skip


class RedisCluster:
    """Three masters, no replicas: ``start()``, ``restart(i)``, ``flush()``, ``cleanup()``.

    ``node_args`` are more ``redis-server`` options for every node (``BUDGET_SAFE``, say)."""

    def __init__(self, masters: int = 3, node_args: tuple[str, ...] = ()) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not installed (apt-get install redis-tools)")
        self.cli = cli
        self.nodes = [cluster_node(free_cluster_port(), node_args) for _ in range(masters)]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """A seed URL in the cluster form costwatch understands (any node finds the others)."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}/0"

    @property
    def node_url(self) -> str:
        """The plain URL of one node (what a standalone client would be handed)."""
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                self.cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        self.wait_ok()

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Until every node reports ``cluster_state:ok`` and knows all the masters."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if all(self._healthy(port) for port in self.ports):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"cluster on {self.ports} did not reach cluster_state:ok")

    def _healthy(self, port: int) -> bool:
        info = _command(port, "CLUSTER", "INFO")
        if b"cluster_state:ok" not in info:
            return False
        return b"cluster_known_nodes:%d" % len(self.nodes) in info

    def index_of(self, port: int) -> int:
        """Index of the node listening on ``port`` (redis-py names nodes by host and port)."""
        return self.ports.index(port)

    def restart(self, index: int, *, down_s: float = 0.0) -> None:
        """Kill node ``index`` (``SIGKILL``) and start it again on the same port and data dir;
        it rejoins from its ``nodes.conf`` with the same slots.  Its data is lost unless the
        nodes run with an append-only file (``BUDGET_SAFE``), which it then reloads."""
        node = self.nodes[index]
        node.stop()
        if down_s:
            time.sleep(down_s)
        node.start()
        self.wait_ok()

    def flush(self) -> None:
        for port in self.ports:
            _command(port, "FLUSHALL")

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()

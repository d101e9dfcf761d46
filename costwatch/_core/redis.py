"""The one place costwatch builds Redis clients: sync and asyncio, standalone and Redis Cluster.

* **Which kind.**  ``redis+cluster://host:port/0`` (or ``rediss+cluster://``) names any node of a
  Redis Cluster; ``cluster=True`` (``configure(redis_cluster=True)``) says the same of a plain
  ``redis://`` URL.  Otherwise the client is a standalone ``redis.Redis``.  An injected client
  (``configure(redis_client=...)``) is used as it is: :func:`is_cluster_client` tells its kind.
* **Fail fast.**  Short socket timeouts and no retries: a dead Redis costs a call at most one
  timeout, and the callers' circuit breakers decide when to try again.  asyncio clients get
  ``redis.asyncio.retry.Retry`` (handing them the sync ``Retry`` makes redis-py convert it and
  emit a ``UserWarning`` into the host's stderr).
* **Event loops.**  An asyncio client is bound to the loop it first ran on.
  :class:`LoopClients` keeps one per loop and closes it *before* that loop closes: the loop's
  ``shutdown_asyncgens()`` (which ``asyncio.run()`` calls) finalises a small async generator
  started with the client.  A loop closed without it (``loop.close()`` by hand) has its client's
  sockets closed the next time another loop asks for one, so ``asyncio.run()`` per call never
  leaks a connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import weakref
from collections.abc import AsyncGenerator, Callable
from typing import Any, Generic, TypeVar

from costwatch._core.forks import new_lock

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
URL_SCHEMES = ("redis://", "rediss://", "unix://", *CLUSTER_SCHEMES)
"""The ``redis_url`` forms costwatch accepts."""

MAX_CONNECTIONS = 64
"""Per client (per node of a cluster, per event loop for asyncio); redis-py's default of 100 is
easy to exhaust with a burst of concurrent calls and not a bound worth having."""

T = TypeVar("T")


def is_cluster_url(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEMES)


def node_url(url: str) -> str:
    """``redis+cluster://`` -> ``redis://`` (what redis-py parses)."""
    for scheme in CLUSTER_SCHEMES:
        if url.startswith(scheme):
            return scheme.replace("+cluster", "") + url[len(scheme) :]
    return url


def is_cluster_client(client: Any) -> bool:
    """Is ``client`` a ``redis.cluster.RedisCluster`` or its asyncio twin?"""
    import redis.asyncio.cluster
    import redis.cluster

    return isinstance(client, (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster))


def wants_cluster(url: str, cluster: bool) -> bool:
    return cluster or is_cluster_url(url)


def client_options(
    timeout_s: float, *, asyncio: bool, max_connections: int | None = MAX_CONNECTIONS
) -> dict[str, Any]:
    """Fail-fast options: short socket timeouts and no retries (the breakers decide).

    redis-py 6+ retries a failed command with backoff by default, which would multiply the
    timeout a dead Redis adds to a call; costwatch never wants that on the host's call path.
    """
    from redis.backoff import NoBackoff

    if asyncio:
        from redis.asyncio.retry import Retry as AsyncRetry

        retry: Any = AsyncRetry(NoBackoff(), 0)
    else:
        from redis.retry import Retry

        retry = Retry(NoBackoff(), 0)
    options: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": retry,
        "health_check_interval": 0,
    }
    if max_connections is not None:
        options["max_connections"] = max_connections
    return options


def connect(
    url: str,
    *,
    timeout_s: float,
    cluster: bool = False,
    max_connections: int | None = MAX_CONNECTIONS,
    asyncio: bool = False,
) -> Any:
    """A client for ``url``: ``redis.Redis`` or ``redis.cluster.RedisCluster``, or with
    ``asyncio=True`` their asyncio twins (bound to the loop they first run on).

    Raises ``ValueError`` for a URL redis-py cannot parse.
    """
    options = client_options(timeout_s, asyncio=asyncio, max_connections=max_connections)
    import redis
    import redis.asyncio

    clients = redis.asyncio if asyncio else redis
    if wants_cluster(url, cluster):
        return clients.RedisCluster.from_url(node_url(url), **options)
    return clients.Redis.from_url(url, retry_on_timeout=False, **options)


connect_async = functools.partial(connect, asyncio=True)
"""``connect(url, ..., asyncio=True)``: an asyncio client for ``url``."""


async def _close_with_loop(client: Any, abandoned: list[bool]) -> AsyncGenerator[None, None]:
    """Started when ``client`` is made; the loop's ``shutdown_asyncgens()`` finalises it, which
    closes the client while its loop still runs (unless the client was ``abandoned``)."""
    try:
        yield
    finally:
        if not abandoned[0]:
            with contextlib.suppress(Exception):
                await client.aclose()


def _abandon(client: Any) -> None:
    """Close the sockets of an asyncio client whose loop is already closed (nothing can be
    awaited there any more); the client is not used again."""
    pools = []
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        pools.append(pool)
    for node in getattr(client, "get_nodes", lambda: [])():
        pools.append(node)  # a cluster node holds its connections itself
    for holder in pools:
        conns = [
            *getattr(holder, "_available_connections", ()),
            *getattr(holder, "_in_use_connections", ()),
            *getattr(holder, "_connections", ()),
            *getattr(holder, "_free", ()),
        ]
        for conn in conns:
            transport: Any = getattr(getattr(conn, "_writer", None), "transport", None)
            sock = getattr(transport, "_sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
                with contextlib.suppress(AttributeError):  # closed: no warning when collected
                    transport._sock = None
                    transport._closing = True
            with contextlib.suppress(Exception):
                conn._reader = None
                conn._writer = None


class LoopClients(Generic[T]):
    """One asyncio client per event loop, made by ``factory`` on first use in that loop and
    closed with it (see the module's docstring).  Thread-safe; reset in a forked child."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._lock = new_lock()
        self._clients: dict[int, tuple[weakref.ref[asyncio.AbstractEventLoop], T, Any]] = {}
        self._last: tuple[weakref.ref[asyncio.AbstractEventLoop], T] | None = None
        self._pid = os.getpid()

    def get(self) -> T:
        """The running loop's client (call from a coroutine)."""
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0]() is loop and self._pid == os.getpid():
            return last[1]
        with self._lock:
            if self._pid != os.getpid():  # a forked child never uses its parent's sockets
                self._clients = {}
                self._pid = os.getpid()
            found = self._clients.get(id(loop))
            if found is None or found[0]() is not loop:
                self._release_closed()
                client = self._factory()
                abandoned = [False]
                closer = _close_with_loop(client, abandoned)
                with contextlib.suppress(StopIteration):
                    closer.__anext__().send(None)  # runs to its yield: no await before it
                found = (weakref.ref(loop), client, (closer, abandoned))
                self._clients[id(loop)] = found
            self._last = (found[0], found[1])
            return found[1]

    def _release_closed(self) -> None:
        """Drop the clients of loops that are gone or closed (under the lock)."""
        for key, (ref, client, (closer, abandoned)) in list(self._clients.items()):
            loop = ref()
            if loop is None or loop.is_closed():
                del self._clients[key]
                _abandon(client)
                abandoned[0] = True
                with contextlib.suppress(StopIteration, RuntimeError):
                    closer.aclose().send(None)  # its finally awaits nothing now: it ends here

    async def aclose(self) -> None:
        """Close the running loop's client now."""
        loop = asyncio.get_running_loop()
        with self._lock:
            found = self._clients.pop(id(loop), None)
            self._last = None
        if found is not None:
            with contextlib.suppress(Exception):
                await found[2][0].aclose()

    def __len__(self) -> int:
        with self._lock:
            return len(self._clients)

    def after_fork_in_child(self) -> None:
        """The parent's clients and sockets are not this process's: forget them unclosed."""
        self._lock = new_lock()
        self._clients = {}
        self._last = None
        self._pid = os.getpid()

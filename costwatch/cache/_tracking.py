"""Namespace generations kept in process and invalidated by Redis itself (``CLIENT TRACKING``).

A strict cache hit needs the namespace generation and the entry.  Read together, that is a
script call (``GET`` + a bounded ``GETRANGE``) on every hit.  Redis can instead say when a
generation changes: every key read on a connection with ``CLIENT TRACKING ON REDIRECT <id>``
is remembered by the server, and the next write of that key by any client publishes its name
on ``__redis__:invalidate`` to connection ``<id>``.  :class:`GenerationTracker` keeps the
generations it read that way in ``known``, so a hit is one bounded ``GETRANGE`` of the entry
while its generation is known, and the script call otherwise.  (Not on a Redis Cluster:
tracking is per node, so the backend does not track there.)

One daemon thread owns both connections (RESP2).  It reads the generations callers asked for
(``want``) and applies invalidation messages, in order, so a value it keeps is dropped by the
message of any later write.  Another process's ``invalidate()`` therefore reaches this one as
soon as Redis's message arrives; this process's own is immediate (``forget``).  Anything unsure
clears everything and ends the thread: a lost connection, a flush, a ``PING`` left unanswered.
The next ``want`` (made after a successful read, so Redis is back) starts a new thread.
When the server refuses tracking (Redis < 6, a proxy, an ACL) the tracker stops for good and
every hit reads the generation with its entry.  A forked child starts knowing nothing: the
parent's thread, which would have told it of writes, does not exist there.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from costwatch._core.failopen import errors

if TYPE_CHECKING:
    import redis

logger = logging.getLogger("costwatch.cache")

CHANNEL = b"__redis__:invalidate"

_IDLE_S = 0.05
"""How long the thread waits for an invalidation before it looks for generations to read."""

_PING_EVERY_S = 1.0
"""An idle invalidation connection is pinged this often; no answer by the next ping: unsure."""

_MAX_KNOWN = 4096


def _no_driver_info() -> dict[str, None]:
    """Connection options that skip ``CLIENT SETINFO`` (and redis-py's metadata lookup)."""
    try:
        import redis.driver_info  # noqa: F401 - redis-py >= 7 names it ``driver_info``
    except ImportError:
        return {"lib_name": None, "lib_version": None}
    return {"driver_info": None}


_NO_DRIVER_INFO = _no_driver_info()

_DROPPED_KWARGS = ("maint_notifications", "orig_", "driver_info", "lib_")
"""redis-py connection options that need RESP3 (the tracker speaks RESP2), describe the pool, or
name the client library (resolving its version reads package metadata on every connect)."""


class GenerationTracker:
    """Generations read on a tracking connection, dropped when Redis says they changed."""

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self.known: dict[str, int] = {}
        """Generation key -> generation, for keys Redis will report writes of (call path reads
        it without a lock)."""
        self.enabled = True
        """False once the server refused tracking."""
        self._pool = pool
        self._wanted: dict[str, None] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._epoch = 0
        """Bumped by ``forget``: a read that started before must not be kept."""
        self._thread: threading.Thread | None = None
        self._busy = False
        self._closed = False
        self._ping_now = False
        self._pings = 0
        self._pongs = 0
        _trackers.add(self)

    def _after_fork(self) -> None:
        """In a forked child: no thread, and nothing it knew (no one tells it of writes)."""
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self.known.clear()
        self._wanted.clear()
        self._thread = None
        self._busy = self._ping_now = False
        self._pings = self._pongs = 0

    # -- the cache's side --------------------------------------------------------------------
    def want(self, gen_key: str) -> None:
        """Track ``gen_key`` (read it on the tracking connection soon; never blocks)."""
        if not self.enabled or self._closed or gen_key in self._wanted:
            return
        with self._lock:
            self._wanted[gen_key] = None
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="costwatch-cache-tracking", daemon=True
                )
                self._thread.start()

    def forget(self, gen_key: str) -> None:
        """This process changed ``gen_key``: stop using what it knew, now."""
        with self._lock:
            self._epoch += 1
            self.known.pop(gen_key, None)

    def wait(self, timeout: float = 5.0) -> bool:
        """Wait until every generation asked for was read (or given up); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._wanted or self._busy:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None:
                    return not (self._wanted or self._busy)
                self._idle.wait(left)
        return True

    def sync(self, timeout: float = 5.0) -> bool:
        """Wait until every invalidation Redis sent before this call is applied (a ``PING``
        on the invalidation connection: its answer comes after them); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            if self._thread is None:
                return True  # nothing is known
            target = self._pings + 1
            self._ping_now = True
            while self._pongs < target and self._thread is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self) -> None:
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2 * _PING_EVERY_S)

    # -- the thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        inv = trk = None
        try:
            inv, trk = self._connect()
            self._serve(inv, trk)
        except Exception as exc:  # start over when a generation is wanted again
            self._failed(exc)
        finally:
            with self._lock:
                self.known.clear()
                self._wanted.clear()
                self._busy = False
                self._thread = None
                self._idle.notify_all()
            for conn in (inv, trk):
                if conn is not None:
                    conn.disconnect()

    def _connection(self) -> Any:
        pool = self._pool
        kwargs = {
            k: v for k, v in pool.connection_kwargs.items() if not k.startswith(_DROPPED_KWARGS)
        }
        kwargs.update(protocol=2, decode_responses=False, **_NO_DRIVER_INFO)
        conn = pool.connection_class(**kwargs)
        conn.connect()
        return conn

    def _connect(self) -> tuple[Any, Any]:
        inv = self._connection()
        inv.send_command("CLIENT", "ID")
        client_id = inv.read_response()
        inv.send_command("SUBSCRIBE", CHANNEL)
        inv.read_response()
        trk = self._connection()
        trk.send_command("CLIENT", "TRACKING", "ON", "REDIRECT", client_id)
        trk.read_response()
        return inv, trk

    def _serve(self, inv: Any, trk: Any) -> None:
        pinged = time.monotonic()
        while not self._closed:
            while inv.can_read(timeout=0):
                self._invalidated(inv.read_response())
            with self._lock:
                keys = list(self._wanted)[:64]
                for key in keys:
                    del self._wanted[key]
                self._busy = bool(keys)
                epoch = self._epoch
            if keys:
                trk.send_command("MGET", *keys)
                values = trk.read_response()
                with self._lock:
                    if epoch == self._epoch and len(self.known) + len(keys) <= _MAX_KNOWN:
                        for key, raw in zip(keys, values, strict=True):
                            if raw is None or raw.isdigit():  # else the read path reports it
                                self.known[key] = int(raw) if raw is not None else 0
                    self._busy = False
                    self._idle.notify_all()
                continue
            now = time.monotonic()
            if self._ping_now or now - pinged >= _PING_EVERY_S:
                if self._pongs < self._pings and now - pinged >= _PING_EVERY_S:
                    return  # the invalidation connection went quiet: nothing known is sure
                if self._pongs == self._pings:
                    inv.send_command("PING")
                    with self._lock:
                        self._pings += 1
                        self._ping_now = False
                    pinged = now
            if inv.can_read(timeout=_IDLE_S):
                self._invalidated(inv.read_response())

    def _invalidated(self, message: Any) -> None:
        """Apply one message from the invalidation connection."""
        kind = message[0]
        if kind == b"pong":
            with self._lock:
                self._pongs += 1
                self._idle.notify_all()
            return
        if kind == b"message" and message[1] == CHANNEL:
            keys = message[2]
            with self._lock:
                if keys is None:  # FLUSHDB / FLUSHALL
                    self.known.clear()
                else:
                    for key in keys:
                        self.known.pop(key.decode("utf-8", "surrogateescape"), None)

    def _failed(self, exc: Exception) -> None:
        """A refused command turns tracking off; a lost connection is operational (the next
        ``want`` reconnects); anything else is costwatch's own bug."""
        import redis

        if isinstance(exc, redis.ResponseError):
            self.enabled = False
            logger.info(
                "costwatch cache: Redis refused client tracking (%s); hits read the namespace "
                "generation with every entry",
                exc,
            )
        elif not isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError):
            errors.report("cache", exc)


_trackers: weakref.WeakSet[GenerationTracker] = weakref.WeakSet()


def _forget_all_after_fork() -> None:
    for tracker in list(_trackers):
        tracker._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_all_after_fork)

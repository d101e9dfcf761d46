"""Storage behind ``RetrievalCache``: a Protocol, a thread-safe in-memory twin and Redis.

Every operation the cache needs is one round trip:

- ``read``: the namespace generation and an entry (the hit path): one script call
  (``GET`` + ``GETRANGE``), or for Redis only a ``GETRANGE`` of the entry while Redis tracks
  the generation for this process (see ``_tracking``);
- ``read_entry``: the entry alone (``GETRANGE``; the hit path when the cache trusts the
  generation it read recently, see ``RetrievalCache(generation_ttl=...)``);
- ``acquire``: re-read the entry and, when it is missing, stale or too large, take the
  stampede lock (``SET NX PX`` with a random token) — one Lua script, so a process that read
  the entry missing never computes it again after another stored it and released the lock;
- ``write_release``: store the computed entry and release the lock by compare-and-delete — one
  Lua script, so a lock that expired and was taken by another process is never deleted;
- ``write``: store without a lock (overwrite garbage, waiters that gave up);
- ``bump``: ``INCR`` the namespace generation (O(1) invalidation).

Reads are bounded: ``max_bytes`` is the largest entry the caller accepts, and an entry read
returns at most ``max_bytes + 1`` bytes (more means "too large": the caller treats it as a miss
and overwrites it), so a huge value planted under a key is never transferred whole.

Keys of one namespace share a Redis Cluster hash tag (``{...}``), so the scripts touch one slot.
Values are opaque bytes here; the cache encodes them as JSON and never executes what it reads.
Backend failures raise :class:`BackendError`: Redis being down is an operational state the cache
turns into ``result="error"``, not a costwatch bug.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from costwatch._core.forks import new_lock
from costwatch._core.memo import BoundedMemo

if TYPE_CHECKING:
    from costwatch.cache._tracking import GenerationTracker

Acquired = tuple[int, int, bytes | None]
"""``(status, generation, entry)``: status 2 = a current entry is there (returned), 1 = the
lock is ours, 0 = someone else holds the lock."""

ENTRY_PREFIX = b"[1,"
"""Entries are the JSON array ``[1, generation, "cost", value]``; scripts check this prefix."""

HAVE_ENTRY, LOCKED, BUSY = 2, 1, 0

MAX_CONNECTIONS = 512
"""Per client (per event loop for asyncio); redis-py's default of 100 is easy to exhaust with
many concurrent tasks, and exhaustion raises instead of waiting."""


class BackendError(ConnectionError):
    """The backend could not be reached or refused the command (operational, not a bug).

    ``down`` is False when the backend itself is fine and only this process ran short (its
    connection pool is exhausted): that must not open the circuit breaker.
    """

    def __init__(self, message: str, *, down: bool = True) -> None:
        super().__init__(message)
        self.down = down


@runtime_checkable
class AsyncCacheBackend(Protocol):
    """:class:`CacheBackend` for coroutine functions (same storage, same semantics)."""

    async def read(self, gen_key: str, key: str, max_bytes: int) -> tuple[int, bytes | None]: ...

    async def read_entry(self, key: str, max_bytes: int) -> bytes | None: ...

    async def acquire(
        self, gen_key: str, key: str, lock_key: str, token: str, lock_ms: int, max_bytes: int
    ) -> Acquired: ...

    async def write(self, key: str, entry: bytes, ttl_ms: int) -> None: ...

    async def write_release(
        self, key: str, entry: bytes | None, ttl_ms: int, lock_key: str, token: str
    ) -> None: ...

    async def bump(self, gen_key: str) -> int: ...


@runtime_checkable
class CacheBackend(Protocol):
    """The storage a ``RetrievalCache`` uses (implement it to put the cache elsewhere).

    Keys and values are opaque to the backend; a missing generation reads as 0.

    - ``read(gen_key, key, max_bytes)``: ``(generation, entry or None)`` in one atomic step;
    - ``read_entry(key, max_bytes)``: the entry alone;
    - ``acquire(gen_key, key, lock_key, token, lock_ms, max_bytes)``, atomically: a current
      entry (starting ``[1,<generation>,`` and at most ``max_bytes`` long) gives
      ``(2, generation, entry)``; else the lock taken for ``lock_ms`` with ``token`` gives
      ``(1, generation, None)``; else ``(0, generation, None)`` (someone else holds it);
    - ``write(key, entry, ttl_ms)``; ``write_release(key, entry, ttl_ms, lock_key, token)``:
      store (unless ``entry`` is None) and delete the lock if it still holds ``token``,
      atomically;
    - ``bump(gen_key)``: increment the generation, return the new one;
    - ``asyncio()``: the same storage as an :class:`AsyncCacheBackend`.

    An entry read may be cut to ``max_bytes + 1`` bytes when it is longer than ``max_bytes``
    (the cache then never reads it whole).  Raise :class:`BackendError` when the store cannot
    be reached: the cache calls through and counts ``result="error"``.
    """

    def read(self, gen_key: str, key: str, max_bytes: int) -> tuple[int, bytes | None]: ...

    def read_entry(self, key: str, max_bytes: int) -> bytes | None: ...

    def acquire(
        self, gen_key: str, key: str, lock_key: str, token: str, lock_ms: int, max_bytes: int
    ) -> Acquired: ...

    def write(self, key: str, entry: bytes, ttl_ms: int) -> None: ...

    def write_release(
        self, key: str, entry: bytes | None, ttl_ms: int, lock_key: str, token: str
    ) -> None: ...

    def bump(self, gen_key: str) -> int: ...

    def asyncio(self) -> AsyncCacheBackend: ...


def entry_generation(entry: bytes) -> int | None:
    """The generation an entry claims in its prefix (``[1,<generation>,``), or None."""
    if not entry.startswith(ENTRY_PREFIX):
        return None
    end = entry.find(b",", 3, 24)
    digits = entry[3:end]
    return int(digits) if end > 3 and digits.isdigit() else None


def entry_is_current(entry: bytes | None, generation: int) -> bool:
    """Cheap pre-check the scripts also make: the entry claims the current generation."""
    return entry is not None and entry.startswith(b"%s%d," % (ENTRY_PREFIX, generation))


def _bounded(entry: bytes | None, max_bytes: int) -> bytes | None:
    """What a bounded read returns: at most ``max_bytes + 1`` bytes of the entry."""
    return entry[: max_bytes + 1] if entry is not None else None


# ------------------------------------------------------------------------------------------
# In-memory twin
# ------------------------------------------------------------------------------------------


class MemoryBackend:
    """Thread-safe in-process storage with the same semantics as the Redis backend.

    Used when no Redis is configured.  ``max_entries`` bounds memory: past it, expired entries
    are swept, then the oldest written are dropped.  Generation counters live apart and are
    never dropped (one per namespace, tenant and source): an evicted counter would read as 0
    and make entries written before an ``invalidate`` current again.  ``clock`` is monotonic
    seconds (injectable).
    """

    def __init__(
        self, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._data: dict[str, tuple[bytes, float]] = {}
        self._generations: dict[str, int] = {}
        self._lock = new_lock()
        self._clock = clock
        self._max_entries = max_entries
        self._async = _AsyncMemoryBackend(self)

    def _get(self, key: str, now: float) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] <= now:
            del self._data[key]
            return None
        return item[0]

    def _put(self, key: str, value: bytes, ttl_ms: int | None, now: float) -> None:
        expires = now + ttl_ms / 1000.0 if ttl_ms is not None else float("inf")
        self._data.pop(key, None)
        self._data[key] = (value, expires)
        if len(self._data) > self._max_entries:
            for k in [k for k, (_, exp) in self._data.items() if exp <= now]:
                del self._data[k]
            while len(self._data) > self._max_entries:
                oldest = next(iter(self._data))
                del self._data[oldest]

    def _generation(self, gen_key: str) -> int:
        return self._generations.get(gen_key, 0)

    def read(self, gen_key: str, key: str, max_bytes: int) -> tuple[int, bytes | None]:
        with self._lock:
            now = self._clock()
            return self._generation(gen_key), _bounded(self._get(key, now), max_bytes)

    def read_entry(self, key: str, max_bytes: int) -> bytes | None:
        with self._lock:
            return _bounded(self._get(key, self._clock()), max_bytes)

    def acquire(
        self, gen_key: str, key: str, lock_key: str, token: str, lock_ms: int, max_bytes: int
    ) -> Acquired:
        with self._lock:
            now = self._clock()
            generation = self._generation(gen_key)
            entry = self._get(key, now)
            if entry_is_current(entry, generation) and len(entry or b"") <= max_bytes:
                return HAVE_ENTRY, generation, entry
            if self._get(lock_key, now) is None:
                self._put(lock_key, token.encode(), lock_ms, now)
                return LOCKED, generation, None
            return BUSY, generation, None

    def write(self, key: str, entry: bytes, ttl_ms: int) -> None:
        with self._lock:
            self._put(key, entry, ttl_ms, self._clock())

    def write_release(
        self, key: str, entry: bytes | None, ttl_ms: int, lock_key: str, token: str
    ) -> None:
        with self._lock:
            now = self._clock()
            if entry is not None:
                self._put(key, entry, ttl_ms, now)
            if self._get(lock_key, now) == token.encode():
                del self._data[lock_key]

    def bump(self, gen_key: str) -> int:
        with self._lock:
            generation = self._generations[gen_key] = self._generation(gen_key) + 1
            return generation

    def asyncio(self) -> AsyncCacheBackend:
        return self._async

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)


class _AsyncMemoryBackend:
    """The twin's operations never block, so the async view calls them directly."""

    __slots__ = ("_sync",)

    def __init__(self, sync: MemoryBackend) -> None:
        self._sync = sync

    async def read(self, gen_key: str, key: str, max_bytes: int) -> tuple[int, bytes | None]:
        return self._sync.read(gen_key, key, max_bytes)

    async def read_entry(self, key: str, max_bytes: int) -> bytes | None:
        return self._sync.read_entry(key, max_bytes)

    async def acquire(
        self, gen_key: str, key: str, lock_key: str, token: str, lock_ms: int, max_bytes: int
    ) -> Acquired:
        return self._sync.acquire(gen_key, key, lock_key, token, lock_ms, max_bytes)

    async def write(self, key: str, entry: bytes, ttl_ms: int) -> None:
        self._sync.write(key, entry, ttl_ms)

    async def write_release(
        self, key: str, entry: bytes | None, ttl_ms: int, lock_key: str, token: str
    ) -> None:
        self._sync.write_release(key, entry, ttl_ms, lock_key, token)

    async def bump(self, gen_key: str) -> int:
        return self._sync.bump(gen_key)


# ------------------------------------------------------------------------------------------
# Redis
# ------------------------------------------------------------------------------------------

# KEYS: generation, entry.  ARGV: max bytes.  An entry longer than that comes back cut short.
_READ_LUA = """
return {redis.call('GET', KEYS[1]), redis.call('GETRANGE', KEYS[2], 0, ARGV[1])}
"""

# KEYS: generation, entry, lock.  ARGV: token, lock ms, max bytes.
_ACQUIRE_LUA = """
local g = redis.call('GET', KEYS[1]) or '0'
if redis.call('STRLEN', KEYS[2]) <= tonumber(ARGV[3]) then
  local v = redis.call('GET', KEYS[2])
  local prefix = '[1,' .. g .. ','
  if v and string.sub(v, 1, #prefix) == prefix then
    return {2, g, v}
  end
end
if redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, g, false}
end
return {0, g, false}
"""

# KEYS: entry, lock.  ARGV: entry ('' = do not store), ttl ms, token.
_WRITE_RELEASE_LUA = """
if ARGV[1] ~= '' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
if redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
end
return 1
"""


class _Script:
    """A Lua script called by SHA, loaded on ``NOSCRIPT`` (a restarted node, another node of a
    cluster): the same object serves sync and asyncio, standalone and cluster clients."""

    __slots__ = ("text", "sha")

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()

    def __call__(self, client: Any, keys: tuple[str, ...], args: tuple[Any, ...]) -> Any:
        from redis.exceptions import NoScriptError

        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self.text)
            return client.evalsha(self.sha, len(keys), *keys, *args)

    async def acall(self, client: Any, keys: tuple[str, ...], args: tuple[Any, ...]) -> Any:
        from redis.exceptions import NoScriptError

        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.text)
            return await client.evalsha(self.sha, len(keys), *keys, *args)


_READ = _Script(_READ_LUA)
_ACQUIRE = _Script(_ACQUIRE_LUA)
_WRITE_RELEASE = _Script(_WRITE_RELEASE_LUA)


def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.RedisError, OSError)


def _backend_error(exc: BaseException) -> BackendError:
    """What a redis-py failure means for the cache.

    ``MOVED``/``ASK`` reach the cache only from a standalone client handed one node of a
    Redis Cluster (a cluster client follows them): the node is up and answering, so the
    breaker must not open for every key; the message says what to configure instead.
    """
    import redis.exceptions

    if isinstance(exc, redis.exceptions.AskError):  # MovedError is one too
        return BackendError(
            "MOVED: the Redis URL names one node of a Redis Cluster; use a redis+cluster:// "
            "URL or configure(redis_cluster=True)",
            down=False,
        )
    # redis-py >= 5.1: the pool ran out of connections (this process, not Redis, is short).
    exhausted: Any = getattr(redis.exceptions, "MaxConnectionsError", ())
    return BackendError(type(exc).__name__, down=not isinstance(exc, exhausted))


def _acquired(reply: Any) -> Acquired:
    status, generation, entry = reply
    return int(status), int(generation), entry if entry else None


def _generation(raw: bytes | None) -> int:
    return int(raw) if raw is not None else 0


def _read(reply: Any) -> tuple[bytes | None, bytes | None]:
    """The read script's ``(generation, entry)``: ``GETRANGE`` answers "" for a missing key."""
    raw_gen, entry = reply
    return raw_gen, entry or None


def tracked_entry(entry: bytes | None, known: int) -> bool:
    """Can an entry read alone be judged by the generation ``known`` (tracked, or trusted for
    ``generation_ttl``)?  Not when it claims a newer one: this process has not heard of that
    invalidation yet."""
    if entry is None or entry.startswith(b"[1,%d," % known):
        return True
    claimed = entry_generation(entry)
    return claimed is None or claimed <= known


class RedisBackend:
    """Redis or a Redis Cluster through redis-py, built by costwatch's one client factory
    (``_core.redis``: fail-fast options); ``asyncio()`` gives the redis.asyncio twin.

    ``url``: ``redis://``, ``rediss://``, ``unix://``, or ``redis+cluster://`` (any node of a
    cluster; ``cluster=True`` says the same of a plain URL); or an injected ``client``
    (``redis.Redis`` or ``redis.cluster.RedisCluster``).  All keys of one entry (entry,
    generation, lock) share a hash tag, so every script runs on one node.

    ``track_generations`` (default on): Redis reports changes of the namespace generations this
    process read (``GenerationTracker``), so a hit is one bounded read instead of a script
    call.  Off on a cluster: tracking is per node, and a generation lives on whichever node
    holds its slot; there a hit is one script call on that node.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Any = None,
        timeout_s: float = 0.1,
        track_generations: bool = True,
        cluster: bool = False,
    ) -> None:
        from costwatch._core.redis import connect, is_cluster_client

        if client is None:
            if url is None:
                raise ValueError("RedisBackend needs a url or a client")
            client = connect(
                url, timeout_s=timeout_s, cluster=cluster, max_connections=MAX_CONNECTIONS
            )
        self.url = url
        self.timeout_s = timeout_s
        self.client = client
        self.cluster = is_cluster_client(client)
        self._slots: BoundedMemo[str, int] = BoundedMemo(4096)
        """Key -> cluster hash slot (a pure function of the key: computing it costs µs)."""
        self._errors = _redis_errors()
        self.tracker: GenerationTracker | None = None
        if track_generations and not self.cluster:
            from costwatch.cache._tracking import GenerationTracker

            self.tracker = GenerationTracker(client.connection_pool)
        self._known: dict[str, int] = self.tracker.known if self.tracker is not None else {}
        self._async = (
            None  # an injected client: no URL to build redis.asyncio clients from
            if url is None
            else AsyncRedisBackend(
                url, timeout_s=timeout_s, tracker=self.tracker, cluster=self.cluster
            )
        )
        """The asyncio twin (it connects in each event loop on first use, not here)."""

    def node_of(self, key: str) -> str:
        """The cluster node that serves ``key`` now (``host:port``), from the client's slot
        map; "" for a standalone Redis, or while the slot is not covered."""
        if not self.cluster:
            return ""
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots.remember(key, int(self.client.keyslot(key)))
        try:
            return str(self.client.nodes_manager.slots_cache[slot][0].name)
        except (AttributeError, KeyError, IndexError):
            return ""

    def read(self, gen_key: str, key: str, max_bytes: int) -> tuple[int, bytes | None]:
        known = self._known.get(gen_key)
        try:
            if known is not None:
                entry = self.client.getrange(key, 0, max_bytes) or None
                if tracked_entry(entry, known):
                    return known, entry
            raw_gen, entry = _read(_READ(self.client, (gen_key, key), (max_bytes,)))
        except self._errors as exc:
            raise _backend_error(exc) from exc
        if self.tracker is not None:
            self.tracker.want(gen_key)
        return _generation(raw_gen), entry

    def read_entry(self, key: str, max_bytes: int) -> bytes | None:
        try:
            entry: bytes | None = self.client.getrange(key, 0, max_bytes) or None
        except self._errors as exc:
            raise _backend_error(exc) from exc
        return entry

    def acquire(
        self, gen_key: str, key: str, lock_key: str, token: str, lock_ms: int, max_bytes: int
    ) -> Acquired:
        try:
            reply = _ACQUIRE(self.client, (gen_key, key, lock_key), (token, lock_ms, max_bytes))
        except self._errors as exc:
            raise _backend_error(exc) from exc
        return _acquired(reply)

    def write(self, key: str, entry: bytes, ttl_ms: int) -> None:
        try:
            self.client.set(key, entry, px=ttl_ms)
        except self._errors as exc:
            raise _backend_error(exc) from exc

    def write_release(
        self, key: str, entry: bytes | None, ttl_ms: int, lock_key: str, token: str
    ) -> None:
        try:
            _WRITE_RELEASE(self.client, (key, lock_key), (entry or b"", ttl_ms, token))
        except self._errors as exc:
            raise _backend_error(exc) from exc

    def bump(self, gen_key: str) -> int:
        try:
            return int(self.client.incr(gen_key))
        except self._errors as exc:
            raise _backend_error(exc) from exc
        finally:
            if self.tracker is not None:
                self.tracker.forget(gen_key)

    def asyncio(self) -> AsyncCacheBackend:
        if self._async is None:
            raise ValueError(
                "RedisBackend(client=...) has no async twin: pass "
                "AsyncRedisBackend(client=<redis.asyncio client>) for async functions"
            )
        return self._async

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.close()
        self.client.close()


class AsyncRedisBackend:
    """Redis or a Redis Cluster through redis.asyncio; a client is bound to an event loop, so
    one per loop (``_core.redis.LoopClients``), unless a ``client`` is injected.

    ``tracker``: the sync twin's ``GenerationTracker`` (its thread serves both), if any.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Any = None,
        timeout_s: float = 0.1,
        tracker: GenerationTracker | None = None,
        cluster: bool = False,
    ) -> None:
        from costwatch._core.redis import LoopClients, connect_async

        if url is None and client is None:
            raise ValueError("AsyncRedisBackend needs a url or a client")
        self.url = url
        self.timeout_s = timeout_s
        self.tracker = tracker
        self._known: dict[str, int] = tracker.known if tracker is not None else {}
        self._fixed = client
        self._errors = _redis_errors()
        self._clients: LoopClients[Any] | None = None
        if client is None:
            assert url is not None
            self._clients = LoopClients(
                lambda: connect_async(
                    url, timeout_s=timeout_s, cluster=cluster, max_connections=MAX_CONNECTIONS
                )
            )

    def _client(self) -> Any:
        clients = self._clients
        return self._fixed if clients is None else clients.get()

    async def read(self, gen_key: str, key: str, max_bytes: int) -> tuple[int, bytes | None]:
        client = self._client()
        known = self._known.get(gen_key)
        try:
            if known is not None:
                entry: bytes | None = await client.getrange(key, 0, max_bytes) or None
                if tracked_entry(entry, known):
                    return known, entry
            raw_gen, entry = _read(await _READ.acall(client, (gen_key, key), (max_bytes,)))
        except self._errors as exc:
            raise _backend_error(exc) from exc
        if self.tracker is not None:
            self.tracker.want(gen_key)
        return _generation(raw_gen), entry

    async def read_entry(self, key: str, max_bytes: int) -> bytes | None:
        client = self._client()
        try:
            entry: bytes | None = await client.getrange(key, 0, max_bytes) or None
        except self._errors as exc:
            raise _backend_error(exc) from exc
        return entry

    async def acquire(
        self, gen_key: str, key: str, lock_key: str, token: str, lock_ms: int, max_bytes: int
    ) -> Acquired:
        client = self._client()
        try:
            reply = await _ACQUIRE.acall(
                client, (gen_key, key, lock_key), (token, lock_ms, max_bytes)
            )
        except self._errors as exc:
            raise _backend_error(exc) from exc
        return _acquired(reply)

    async def write(self, key: str, entry: bytes, ttl_ms: int) -> None:
        client = self._client()
        try:
            await client.set(key, entry, px=ttl_ms)
        except self._errors as exc:
            raise _backend_error(exc) from exc

    async def write_release(
        self, key: str, entry: bytes | None, ttl_ms: int, lock_key: str, token: str
    ) -> None:
        client = self._client()
        try:
            await _WRITE_RELEASE.acall(client, (key, lock_key), (entry or b"", ttl_ms, token))
        except self._errors as exc:
            raise _backend_error(exc) from exc

    async def bump(self, gen_key: str) -> int:
        client = self._client()
        try:
            return int(await client.incr(gen_key))
        except self._errors as exc:
            raise _backend_error(exc) from exc
        finally:
            if self.tracker is not None:
                self.tracker.forget(gen_key)

    async def aclose(self) -> None:
        """Close the client of the running loop (each loop's client closes with its loop)."""
        if self._clients is not None:
            await self._clients.aclose()


_shared_lock = new_lock()
_shared: dict[tuple[str, float, bool], RedisBackend] = {}


def shared_redis_backend(url: str, timeout_s: float, cluster: bool = False) -> RedisBackend:
    """One backend (connection pools) per URL, timeout and kind in the process, reused by
    every cache."""
    key = (url, timeout_s, cluster)
    backend = _shared.get(key)
    if backend is None:
        with _shared_lock:
            backend = _shared.get(key)
            if backend is None:
                backend = _shared[key] = RedisBackend(url, timeout_s=timeout_s, cluster=cluster)
    return backend


def sync_trackers(timeout_s: float = 5.0) -> None:
    """Wait until every shared backend applied the invalidations Redis sent so far (after a
    flush made outside costwatch, say)."""
    with _shared_lock:
        backends = list(_shared.values())
    for backend in backends:
        if backend.tracker is not None:
            backend.tracker.sync(timeout_s)

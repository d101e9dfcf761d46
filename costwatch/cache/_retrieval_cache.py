"""``RetrievalCache``: serve repeated retrievals and embeddings from Redis, count the dollars saved.

``@costwatch.retrieval(source="kb", cache=RetrievalCache(ttl=600))`` calls ``cache.wrap(fn, ...)``
at decoration time.  Each call of the wrapped function then:

1. builds a key: SHA-256 of the canonical JSON of (namespace, tenant, source, version, stage,
   function, normalised arguments).  Arguments that are not plain JSON make the call skip the
   cache (``result="skip"``).  No argument text ever reaches a key or a log line;
2. looks in the optional in-process LRU, then in the backend (the entry, with the namespace
   generation unless Redis tracks it for this process).  A current entry is a hit: its value is
   returned and the cost stored beside it is reported as saved;
3. on a miss, runs the function once per key — threads and asyncio tasks of this process share
   one computation, and across processes a short Redis lock (``SET NX PX``, random token,
   compare-and-delete release) lets one process compute while the others poll for the value
   for a bounded time, then compute themselves;
4. stores the value (JSON, never pickle) with the cost of the calls made inside it.

Redis down is an operational state, not a bug: the call goes straight through, the lookup counts
as ``result="error"``, one log line a minute, and a circuit breaker stops paying the socket
timeout until a probe finds Redis back.  costwatch's own bugs go to ``errors.report``.

The parts: keys and entries in ``_cache_codec``, the local LRU in ``_cache_local``, in-process
single flight in ``_cache_flight``, per-runtime state in ``_cache_resolved``, one function's
lookup steps and events in ``_cache_lookup``, the sync and async call paths in ``_cache_calls``.
"""

from __future__ import annotations

import inspect
import logging
import math
import random
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

from costwatch._core import runtime as _runtime
from costwatch._core.breaker import CircuitBreaker
from costwatch._core.context import current_tags
from costwatch._core.errors import ConfigError
from costwatch._core.forks import new_lock
from costwatch.cache._backend import BackendError, CacheBackend, shared_redis_backend
from costwatch.cache._calls import async_wrapper, sync_wrapper
from costwatch.cache._codec import decode_entry as decode_entry
from costwatch.cache._codec import entry_body as entry_body
from costwatch.cache._codec import namespace_tag
from costwatch.cache._local import LocalLRU
from costwatch.cache._lookup import OwnCost, Site
from costwatch.cache._lookup import last_lookup_var as last_lookup_var
from costwatch.cache._resolved import Resolved, memory_twin

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger("costwatch.cache")

_LOG_INTERVAL_S = 60.0


class RetrievalCache:
    """A Redis-backed cache for ``@costwatch.retrieval`` and ``@costwatch.embedding`` functions.

    ``ttl`` seconds per entry (with up to ``jitter`` of it taken off at random, so entries
    written together do not expire together).  ``namespace`` replaces the service name in keys
    (to share entries between services deliberately); ``version`` is part of every key (bump it
    when the index changes).  ``backend`` is a :class:`CacheBackend` or a Redis URL; by default
    ``configure(redis_url=...)``, else an in-memory twin.  ``max_value_bytes`` bounds a stored
    entry; ``local_size`` > 0 adds an in-process LRU in front of the backend whose entries live
    ``local_ttl`` seconds (other processes' invalidations reach it within that time).
    ``cache_empty`` stores empty results (None, [], {}, "") too.  ``lock_timeout`` bounds how
    long a caller waits for another's computation of the same key.  A hit needs the namespace
    generation: on Redis, the server tracks the generations this process read and reports their
    changes (``CLIENT TRACKING``), so a hit is one ``GET`` of the entry while the generation is
    known and another process's ``invalidate()`` arrives with Redis's message; otherwise it is
    read with the entry (one ``MGET``).  ``generation_ttl`` > 0 trusts a generation read for that
    many seconds instead (for servers or proxies without tracking); the price is that another
    process's ``invalidate()`` reaches this one only after up to that delay (this process's own
    is immediate).  ``key``, when given, is
    called with the call's arguments and returns the plain-JSON value the key is built from
    (needed for methods, whose ``self`` is not JSON).  ``name`` names the cache in metrics
    (default: the decorator's source).
    """

    def __init__(
        self,
        ttl: float = 600.0,
        namespace: str | None = None,
        version: str | int | None = None,
        backend: CacheBackend | str | None = None,
        max_value_bytes: int = 1_000_000,
        local_size: int = 0,
        cache_empty: bool = False,
        *,
        local_ttl: float = 5.0,
        name: str | None = None,
        lock_timeout: float = 5.0,
        generation_ttl: float = 0.0,
        jitter: float = 0.1,
        key: Callable[..., Any] | None = None,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check_positive("ttl", ttl)
        _check_positive("local_ttl", local_ttl)
        _check_positive("lock_timeout", lock_timeout)
        if generation_ttl != 0:
            _check_positive("generation_ttl", generation_ttl)
        if not isinstance(max_value_bytes, int) or max_value_bytes < 64:
            raise ConfigError("max_value_bytes", max_value_bytes, "must be an integer >= 64")
        if not isinstance(local_size, int) or local_size < 0:
            raise ConfigError("local_size", local_size, "must be an integer >= 0")
        if not 0 <= jitter <= 0.5:
            raise ConfigError("jitter", jitter, "must be between 0 and 0.5")
        if isinstance(backend, str) and not backend.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ConfigError(
                "backend", backend, "a URL must start with redis://, rediss:// or unix://"
            )
        if backend is not None and not isinstance(backend, str | CacheBackend):
            raise ConfigError("backend", backend, "must be a CacheBackend or a Redis URL")
        if namespace is not None and not namespace:
            raise ConfigError("namespace", namespace, "must not be empty")
        self.ttl = float(ttl)
        self.namespace = namespace
        self.version = "" if version is None else str(version)
        self.max_value_bytes = max_value_bytes
        self.local_size = local_size
        self.local_ttl = min(float(local_ttl), self.ttl)
        self.cache_empty = cache_empty
        self.lock_timeout = float(lock_timeout)
        self.generation_ttl = float(generation_ttl)
        self.jitter = float(jitter)
        self.name = name or ""
        """The explicit name, or "" (the decorator then names the cache after its source)."""
        self._backend_arg = backend
        self._key_fn = key
        self._breaker_arg = breaker
        self._clock = clock
        self._ttl_ms = max(1, int(self.ttl * 1000))
        self._lock_ms = max(1, int(self.lock_timeout * 1000))
        self._lock = new_lock()
        self._resolved: Resolved | None = None
        self._sources: dict[str, None] = {}
        self._last_log = -math.inf

    # -- public -----------------------------------------------------------------------------
    def wrap(
        self,
        fn: Callable[P, R],
        *,
        source: str,
        stage: str = "retrieval",
        own_cost: OwnCost | None = None,
    ) -> Callable[P, R]:
        """Return ``fn`` served from this cache (same kind: coroutine function stays one).

        Generator functions are returned unchanged: a stream is not a value to cache.
        """
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            return cast(Callable[P, R], fn)
        if not source:
            raise ConfigError("source", source, "a cache needs a source name")
        site = Site(self, fn, source, stage, own_cost)
        with self._lock:
            self._sources[source] = None
        if inspect.iscoroutinefunction(fn):
            return cast(Callable[P, R], async_wrapper(site, cast(Any, fn)))
        return sync_wrapper(site, fn)

    def invalidate(self, tenant: str | None = None) -> None:
        """Drop every entry of this cache for ``tenant`` (default: the current one) in O(1).

        Increments the namespace generation: entries of older generations are never served again
        and expire with their TTL.  Other processes' local LRUs see it within ``local_ttl``.
        Raises :class:`BackendError` (a ``ConnectionError``) when the backend is unreachable:
        the host asked for it, and keeping stale entries silently would be worse.
        """
        res, gen_keys = self._invalidation(tenant)
        for gen_key in gen_keys:
            self._trust(res, gen_key, res.backend.bump(gen_key))

    async def ainvalidate(self, tenant: str | None = None) -> None:
        """:meth:`invalidate` through the asyncio backend."""
        res, gen_keys = self._invalidation(tenant)
        for gen_key in gen_keys:
            self._trust(res, gen_key, await res.abackend.bump(gen_key))

    def _invalidation(self, tenant: str | None) -> tuple[Resolved, list[str]]:
        """Clear the local LRU; the generation keys to bump for ``tenant`` (default: current)."""
        res = self._resolve(_runtime.runtime())
        tenant = current_tags().get("tenant", "") if tenant is None else tenant
        if res.local is not None:
            res.local.clear()
        return res, [self._gen_key(res, tenant, source) for source in self._source_names()]

    def _trust(self, res: Resolved, gen_key: str, generation: int) -> None:
        """Remember a generation just read or written, for ``generation_ttl`` seconds."""
        if self.generation_ttl:
            if len(res.gens) > 4096:
                res.gens.clear()
            res.gens[gen_key] = (self._clock() + self.generation_ttl, generation)

    def _trusted(self, res: Resolved, gen_key: str) -> int | None:
        if not self.generation_ttl:
            return None
        known = res.gens.get(gen_key)
        if known is None or known[0] <= self._clock():
            return None
        return known[1]

    @property
    def breaker(self) -> CircuitBreaker | None:
        """The breaker guarding the current backend (None before the first call)."""
        res = self._resolved
        return res.breaker if res is not None else self._breaker_arg

    # -- internals --------------------------------------------------------------------------
    def _source_names(self) -> list[str]:
        with self._lock:
            names = list(self._sources)
        if not names and self.name:
            names = [self.name]
        return names

    def _resolve(self, rt: _runtime.Runtime) -> Resolved:
        res = self._resolved
        if res is not None and res.rt is rt:
            return res
        with self._lock:
            res = self._resolved
            if res is not None and res.rt is rt:
                return res
            arg = self._backend_arg
            backend: CacheBackend
            timeout = rt.settings.redis_timeout_s
            if isinstance(arg, str):
                backend, is_redis = shared_redis_backend(arg, timeout), True
            elif arg is not None:
                backend, is_redis = arg, False
            elif rt.redis_url:
                backend, is_redis = shared_redis_backend(rt.redis_url, timeout), True
            else:
                backend, is_redis = memory_twin(rt), False
            breaker = self._breaker_arg or CircuitBreaker()
            local = (
                LocalLRU(self.local_size, self.local_ttl, self._clock) if self.local_size else None
            )
            namespace = self.namespace or rt.settings.service
            res = self._resolved = Resolved(rt, backend, breaker, namespace, local, is_redis)
            return res

    def _gen_key(self, res: Resolved, tenant: str, source: str) -> str:
        return namespace_tag(res.namespace, tenant, source) + "gen"

    def _ttl_with_jitter(self) -> int:
        if not self.jitter:
            return self._ttl_ms
        return max(1, int(self._ttl_ms * (1.0 - self.jitter * random.random())))

    def _backend_down(self, res: Resolved, exc: BaseException) -> None:
        """Redis unreachable: tell the breaker, log at most once a minute (no keys, no text)."""
        if not isinstance(exc, BackendError) or exc.down:
            res.breaker.record_failure()
        now = time.monotonic()
        if now - self._last_log >= _LOG_INTERVAL_S:
            self._last_log = now
            logger.warning(
                "costwatch cache %s: backend unavailable (%s); calls go straight through "
                "(logged at most once a minute)",
                self.name or "/".join(self._source_names()),
                exc,
            )


def _check_positive(field: str, value: float) -> None:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not (math.isfinite(value) and value > 0)
    ):
        raise ConfigError(field, value, "must be a positive number of seconds")

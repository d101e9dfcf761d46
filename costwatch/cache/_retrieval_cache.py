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

This class is a thin facade.  The parts: the validated settings in ``_policy``, keys and
entries in ``_codec``, the function's identity in keys in ``_identity``, the local LRU in
``_local``, in-process single flight in ``_flight``, per-runtime state in ``_resolved``, one
function's lookup steps and events in ``_lookup``, the sync and async call paths in ``_calls``,
storage in ``_backend`` (and ``_tracking``).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

from costwatch._core.breaker import CircuitBreaker
from costwatch._core.context import current_tags
from costwatch._core.errors import ConfigError
from costwatch._core.redis import URL_SCHEMES
from costwatch.cache._backend import CacheBackend
from costwatch.cache._calls import async_wrapper, sync_wrapper
from costwatch.cache._codec import namespace_tag
from costwatch.cache._lookup import OwnCost, Site
from costwatch.cache._lookup import last_lookup_var as last_lookup_var
from costwatch.cache._policy import CachePolicy
from costwatch.cache._resolved import Resolved, Resolver

P = ParamSpec("P")
R = TypeVar("R")


class RetrievalCache:
    """A Redis-backed cache for ``@costwatch.retrieval`` and ``@costwatch.embedding`` functions.

    ``ttl`` seconds per entry (with up to ``jitter`` of it taken off at random, so entries
    written together do not expire together).  ``namespace`` replaces the service name in keys
    (to share entries between services deliberately); ``version`` is part of every key (bump it
    when the index changes).  ``backend`` is a :class:`CacheBackend` or a Redis URL
    (``redis+cluster://`` for a Redis Cluster); by default ``configure(redis_url=...)``, else an
    in-memory twin.  ``max_value_bytes`` bounds a stored entry, and a read: a larger value
    found under a key is never read whole, it is a miss that the computed value overwrites.
    ``local_size`` > 0 adds an in-process LRU in front of the
    backend whose entries live ``local_ttl`` seconds (other processes' invalidations reach it
    within that time).  ``cache_empty`` stores empty results (None, [], {}, "") too.
    ``lock_timeout`` bounds how long a caller waits for another's computation of the same key.

    A hit needs the namespace generation: on Redis, the server tracks the generations this
    process read and reports their changes (``CLIENT TRACKING``), so a hit is one bounded read
    of the entry while the generation is known and another process's ``invalidate()`` arrives
    with Redis's message; otherwise it is read with the entry (one script call).
    ``generation_ttl`` > 0 trusts a generation read for that many seconds instead (for servers
    or proxies without tracking); the price is that another process's ``invalidate()`` reaches
    this one only after up to that delay (this process's own is immediate).

    Keys: ``key``, when given, is called with the call's arguments and returns the plain-JSON
    value the key is built from (needed for methods, whose ``self`` is not JSON).  The function
    itself is identified in keys as ``_identity.function_identity`` says (module, qualified
    name, and for functions made at run time their code and captured values);
    ``key_namespace`` names it explicitly instead: functions given the same ``key_namespace``
    (and source and version) share entries, deliberately.  ``tenant_required`` refuses to serve
    or store an entry for a call made outside a ``costwatch.tags(tenant=...)`` block (counted
    as ``skip``): use it for caches whose entries belong to one tenant, where work submitted to
    a pool without ``costwatch.wrap``/``costwatch.context_executor`` must not read the shared
    no-tenant namespace.  ``name`` names the cache in metrics (default: the decorator's source).
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
        key_namespace: str | None = None,
        tenant_required: bool = False,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(backend, str) and not backend.startswith(URL_SCHEMES):
            raise ConfigError("backend", backend, "a URL must start with " + ", ".join(URL_SCHEMES))
        if backend is not None and not isinstance(backend, str | CacheBackend):
            raise ConfigError("backend", backend, "must be a CacheBackend or a Redis URL")
        self.policy = CachePolicy(
            ttl=ttl,
            namespace=namespace,
            version=version,
            max_value_bytes=max_value_bytes,
            local_size=local_size,
            cache_empty=cache_empty,
            local_ttl=local_ttl,
            name=name,
            lock_timeout=lock_timeout,
            generation_ttl=generation_ttl,
            jitter=jitter,
            key=key,
            key_namespace=key_namespace,
            tenant_required=tenant_required,
        )
        """The validated settings the lookup and call paths follow."""
        self._resolver = Resolver(self.policy, backend, breaker, clock)

    @property
    def name(self) -> str:
        """The explicit name, or "" (the decorator then names the cache after its source)."""
        return self.policy.name

    @property
    def ttl(self) -> float:
        return self.policy.ttl

    @property
    def breaker(self) -> CircuitBreaker | None:
        """The breaker guarding the current backend (None before the first call); on a Redis
        Cluster, the one whose settings each node's own breaker copies."""
        return self._resolver.breaker

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
        site = Site(self.policy, self._resolver, fn, source, stage, own_cost)
        self._resolver.add_source(source)
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
            res.trust(gen_key, res.backend.bump(gen_key))

    async def ainvalidate(self, tenant: str | None = None) -> None:
        """:meth:`invalidate` through the asyncio backend."""
        res, gen_keys = self._invalidation(tenant)
        for gen_key in gen_keys:
            res.trust(gen_key, await res.abackend.bump(gen_key))

    def _invalidation(self, tenant: str | None) -> tuple[Resolved, list[str]]:
        """Clear the local LRU; the generation keys to bump for ``tenant`` (default: current)."""
        res = self._resolver.current()
        tenant = current_tags().get("tenant", "") if tenant is None else tenant
        if res.local is not None:
            res.local.clear()
        return res, [
            namespace_tag(res.namespace, tenant, source) + "gen"
            for source in self._resolver.source_names()
        ]

"""What a ``RetrievalCache`` uses under one runtime (backend, breaker, sinks, local LRU, the
generations it trusts), the ``Resolver`` that builds it when the runtime changes, and the
in-memory backend every cache of a runtime shares when no Redis is configured."""

from __future__ import annotations

import logging
import math
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from costwatch._core import runtime as _runtime
from costwatch._core.breaker import CircuitBreaker
from costwatch._core.forks import new_lock
from costwatch._core.memo import BoundedMemo
from costwatch.cache._backend import (
    AsyncCacheBackend,
    BackendError,
    CacheBackend,
    MemoryBackend,
    RedisBackend,
    shared_redis_backend,
)
from costwatch.cache._local import LocalLRU
from costwatch.cache._policy import CachePolicy

if TYPE_CHECKING:
    from costwatch._core.sink import Sink
    from costwatch.accounting._tally import Tally

logger = logging.getLogger("costwatch.cache")

_LOG_INTERVAL_S = 60.0
_MAX_TRUSTED = 4096


class Resolved:
    """What a cache uses under one runtime: backend, breaker, tally and sinks, local LRU."""

    __slots__ = (
        "rt",
        "backend",
        "_abackend",
        "breaker",
        "_node_of",
        "_node_breakers",
        "tally",
        "sinks",
        "service",
        "namespace",
        "local",
        "gens",
        "_generation_ttl",
        "_clock",
        "_owner",
        "_lock",
    )

    def __init__(self, rt: _runtime.Runtime, backend: CacheBackend, *, owner: Resolver) -> None:
        """``owner``'s cache under ``rt``, on the ``backend`` it chose there."""
        policy = owner.policy
        self.rt = rt
        self.backend = backend
        self._abackend: AsyncCacheBackend | None = None
        self.breaker = owner._breaker_arg or CircuitBreaker()
        """Guards the backend; on a Redis Cluster, the template of one breaker per node."""
        self._node_of = (
            backend.node_of if isinstance(backend, RedisBackend) and backend.cluster else None
        )
        self._node_breakers: dict[str, CircuitBreaker] = {}
        self.tally: Tally = rt.tally
        """Counts every lookup for the ledger and the in-process Prometheus exporter."""
        self.sinks: tuple[Sink, ...] = rt.untallied_sinks
        """The other sinks, which get each lookup's ``CacheEvent``."""
        self.service = rt.settings.service
        self.namespace = policy.namespace or self.service
        self.local = (
            LocalLRU(policy.local_size, policy.local_ttl, owner.clock)
            if policy.local_size
            else None
        )
        self.gens: BoundedMemo[str, tuple[float, int]] = BoundedMemo(_MAX_TRUSTED)
        """Namespace generations read recently: generation key -> (trusted until, generation)."""
        self._generation_ttl = policy.generation_ttl
        self._clock = owner.clock
        self._owner = owner
        self._lock = new_lock()

    @property
    def abackend(self) -> AsyncCacheBackend:
        found = self._abackend
        if found is None:
            with self._lock:
                found = self._abackend
                if found is None:
                    found = self._abackend = self.backend.asyncio()
        return found

    # -- generations trusted for ``generation_ttl`` ---------------------------------------------
    def trust(self, gen_key: str, generation: int) -> None:
        """Remember a generation just read or written, for ``generation_ttl`` seconds."""
        if self._generation_ttl:
            self.gens.keep(gen_key, (self._clock() + self._generation_ttl, generation))

    def trusted(self, gen_key: str) -> int | None:
        """The generation read less than ``generation_ttl`` ago, or None."""
        if not self._generation_ttl:
            return None
        known = self.gens.get(gen_key)
        if known is None or known[0] <= self._clock():
            return None
        return known[1]

    def breaker_for(self, key: str) -> CircuitBreaker:
        """The breaker of the node serving ``key``: on a Redis Cluster each node has its own,
        so a master that is down stops the cache only for the keys it holds."""
        node_of = self._node_of
        if node_of is None:
            return self.breaker
        node = node_of(key)
        found = self._node_breakers.get(node)
        if found is None:
            with self._lock:
                found = self._node_breakers.setdefault(node, self.breaker.twin())
        return found

    def backend_down(self, exc: BaseException, breaker: CircuitBreaker) -> None:
        """Redis unreachable: tell the breaker, log at most once a minute (no keys, no text)."""
        if not isinstance(exc, BackendError) or exc.down:
            breaker.record_failure()
        self._owner.log_down(exc)


class Resolver:
    """One cache's runtime-dependent state: the ``Resolved`` of the current runtime, the
    sources it serves (for ``invalidate``), and its rate-limited log of backend outages."""

    __slots__ = (
        "policy",
        "clock",
        "_backend_arg",
        "_breaker_arg",
        "_resolved",
        "_sources",
        "_last_log",
        "_lock",
    )

    def __init__(
        self,
        policy: CachePolicy,
        backend: CacheBackend | str | None,
        breaker: CircuitBreaker | None,
        clock: Callable[[], float],
    ) -> None:
        self.policy = policy
        self.clock = clock
        self._backend_arg = backend
        self._breaker_arg = breaker
        self._resolved: Resolved | None = None
        self._sources: dict[str, None] = {}
        self._last_log = -math.inf
        self._lock = new_lock()

    def current(self) -> Resolved:
        """The ``Resolved`` of the current runtime."""
        return self.resolve(_runtime.current or _runtime.runtime())

    def resolve(self, rt: _runtime.Runtime) -> Resolved:
        res = self._resolved
        if res is not None and res.rt is rt:
            return res
        with self._lock:
            res = self._resolved
            if res is not None and res.rt is rt:
                return res
            arg = self._backend_arg
            backend: CacheBackend
            timeout, cluster = rt.settings.redis_timeout_s, rt.settings.redis_cluster
            if isinstance(arg, str):
                backend = shared_redis_backend(arg, timeout, cluster)
            elif arg is not None:
                backend = arg
            elif rt.redis_url:
                backend = shared_redis_backend(rt.redis_url, timeout, cluster)
            else:
                backend = memory_twin(rt)
            res = Resolved(rt, backend, owner=self)
            self._resolved = res
            return res

    @property
    def breaker(self) -> CircuitBreaker | None:
        res = self._resolved
        return res.breaker if res is not None else self._breaker_arg

    def add_source(self, source: str) -> None:
        with self._lock:
            self._sources[source] = None

    def source_names(self) -> list[str]:
        with self._lock:
            names = list(self._sources)
        if not names and self.policy.name:
            names = [self.policy.name]
        return names

    def log_down(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_log >= _LOG_INTERVAL_S:
            self._last_log = now
            logger.warning(
                "costwatch cache %s: backend unavailable (%s); calls go straight through "
                "(logged at most once a minute)",
                self.policy.name or "/".join(self.source_names()),
                exc,
            )


_twins_lock = new_lock()
_twins: dict[int, tuple[Any, MemoryBackend]] = {}


def memory_twin(rt: _runtime.Runtime) -> MemoryBackend:
    """The in-memory backend of one runtime, shared by every cache of that runtime."""
    with _twins_lock:
        found = _twins.get(id(rt))
        if found is not None and found[0]() is rt:
            return found[1]
        for ident in [i for i, (ref, _) in _twins.items() if ref() is None]:
            del _twins[ident]
        twin = MemoryBackend()
        _twins[id(rt)] = (weakref.ref(rt), twin)
        return twin

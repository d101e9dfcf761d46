"""What a ``RetrievalCache`` uses under one runtime: backend, breaker, sinks, local LRU, and the
in-memory backend every cache of a runtime shares when no Redis is configured."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from costwatch._core import runtime as _runtime
from costwatch._core.breaker import CircuitBreaker
from costwatch._core.forks import new_lock
from costwatch.cache._backend import AsyncCacheBackend, CacheBackend, MemoryBackend
from costwatch.cache._local import LocalLRU

if TYPE_CHECKING:
    from costwatch._core.sink import Sink
    from costwatch.accounting._tally import Tally


class Resolved:
    """What a cache uses under one runtime: backend, breaker, tally and sinks, local LRU."""

    __slots__ = (
        "rt",
        "backend",
        "_abackend",
        "breaker",
        "tally",
        "sinks",
        "service",
        "namespace",
        "local",
        "is_redis",
        "gens",
        "_lock",
    )

    def __init__(
        self,
        rt: _runtime.Runtime,
        backend: CacheBackend,
        breaker: CircuitBreaker,
        namespace: str,
        local: LocalLRU | None,
        is_redis: bool,
    ) -> None:
        self.rt = rt
        self.backend = backend
        self._abackend: AsyncCacheBackend | None = None
        self.breaker = breaker
        self.tally: Tally = rt.tally
        """Counts every lookup for the ledger and the in-process Prometheus exporter."""
        self.sinks: tuple[Sink, ...] = rt.untallied_sinks
        """The other sinks, which get each lookup's ``CacheEvent``."""
        self.service = rt.settings.service
        self.namespace = namespace
        self.local = local
        self.is_redis = is_redis
        self.gens: dict[str, tuple[float, int]] = {}
        """Namespace generations read recently: generation key -> (trusted until, generation)."""
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

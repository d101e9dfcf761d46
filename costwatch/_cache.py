"""``RetrievalCache``: serve repeated retrievals and embeddings from Redis, count the dollars saved.

``@costwatch.retrieval(source="kb", cache=RetrievalCache(ttl=600))`` calls ``cache.wrap(fn, ...)``
at decoration time.  Each call of the wrapped function then:

1. builds a key: SHA-256 of the canonical JSON of (namespace, tenant, source, version, stage,
   function, normalised arguments).  Arguments that are not plain JSON make the call skip the
   cache (``result="skip"``).  No argument text ever reaches a key or a log line;
2. looks in the optional in-process LRU, then in the backend (one ``MGET`` of the namespace
   generation and the entry).  A current entry is a hit: its value is returned and the cost
   stored beside it is reported as saved;
3. on a miss, runs the function once per key — threads and asyncio tasks of this process share
   one computation, and across processes a short Redis lock (``SET NX PX``, random token,
   compare-and-delete release) lets one process compute while the others poll for the value
   for a bounded time, then compute themselves;
4. stores the value (JSON, never pickle) with the cost of the calls made inside it.

Redis down is an operational state, not a bug: the call goes straight through, the lookup counts
as ``result="error"``, one log line a minute, and a circuit breaker stops paying the socket
timeout until a probe finds Redis back.  costwatch's own bugs go to ``errors.report``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import logging
import math
import os
import random
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping
from contextvars import ContextVar
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar, cast

import orjson

from costwatch import _runtime
from costwatch._breaker import CircuitBreaker
from costwatch._cache_backend import (
    HAVE_ENTRY,
    LOCKED,
    AsyncCacheBackend,
    BackendError,
    CacheBackend,
    MemoryBackend,
    entry_generation,
    shared_redis_backend,
)
from costwatch._context import cost_scope, current_tags
from costwatch._errors import ConfigError
from costwatch._failopen import errors
from costwatch._sink import CacheEvent

if TYPE_CHECKING:
    from costwatch._sink import Sink

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger("costwatch.cache")

last_lookup_var: ContextVar[str] = ContextVar("costwatch_cache_lookup", default="")
"""Result of the latest cache lookup in this context: ``hit``, ``miss``, ``error`` or ``skip``.

Set just before a cached function returns, so the decorator wrapping it can mark its
``CostRecord.cache_hit``."""

HIT: Final = "hit"
MISS: Final = "miss"
ERROR: Final = "error"
SKIP: Final = "skip"

_ZERO = Decimal(0)
_KEY_PREFIX = "cw:c:"
_LOG_INTERVAL_S = 60.0
_POLL_FIRST_S = 0.005
_POLL_MAX_S = 0.05
_MAX_DEPTH = 64
_SCALARS: frozenset[type] = frozenset({str, int, bool, type(None)})
_EXACT_KEYABLE: frozenset[type] = frozenset({str, int})
"""Argument types whose tuple equality is exactly JSON equality (not bool/float: 1 == True)."""

OwnCost = Callable[[Any], Decimal | None]
"""Given a miss's result, the cost of the wrapping decorator's own record (priced retrieval,
embedding usage read from the result): it is emitted outside the cached function, so the cost
scope cannot see it."""


# ------------------------------------------------------------------------------------------
# Values and keys: plain JSON only
# ------------------------------------------------------------------------------------------


def _plain_json(value: object, allow_tuple: bool, depth: int = 0) -> bool:
    """Is ``value`` made only of types that survive a JSON round trip unchanged?

    Exact types only: a subclass (an Enum over str, an OrderedDict), a tuple in a value, a
    non-finite float or a dataclass would come back as something else, and the host must get
    exactly what its function returned.
    """
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind is float:
        return math.isfinite(cast(float, value))
    if depth >= _MAX_DEPTH:
        return False
    if kind is list or (allow_tuple and kind is tuple):
        for item in cast(list[object], value):
            if type(item) not in _SCALARS and not _plain_json(item, allow_tuple, depth + 1):
                return False
        return True
    if kind is dict:
        for key, item in cast(dict[object, object], value).items():
            if type(key) is not str:
                return False
            if type(item) not in _SCALARS and not _plain_json(item, allow_tuple, depth + 1):
                return False
        return True
    return False


def _is_empty(value: object) -> bool:
    if value is None:
        return True
    kind = type(value)
    return (kind is list or kind is dict or kind is str) and not cast(Any, value)


@functools.lru_cache(maxsize=256)
def _parse_cost(text: str) -> Decimal | None:
    try:
        cost = Decimal(text)
    except InvalidOperation:
        return None
    if not cost.is_finite() or cost < 0:
        return None
    return cost


def _header(generation: int, cost: Decimal) -> bytes:
    return b'[1,%d,"%s",' % (generation, str(cost).encode())


def decode_entry(entry: bytes, generation: int | None) -> tuple[Any, Decimal, str] | None:
    """``(value, cost, cost as stored)`` of a stored entry, or None.

    None for anything that is not an entry of the expected generation: garbage, a pickle, a
    truncated write.  Decoding is ``orjson.loads`` and nothing else: nothing read is executed.
    """
    try:
        obj = orjson.loads(entry)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not list or len(obj) != 4:
        return None
    version, gen, cost_text, value = obj
    if type(version) is not int or version != 1 or type(gen) is not int:
        return None
    if generation is not None and gen != generation:
        return None
    if type(cost_text) is not str:
        return None
    cost = _parse_cost(cost_text)
    if cost is None:
        return None
    return value, cost, cost_text


def entry_body(entry: bytes, generation: int, cost_text: str) -> bytes | None:
    """The value's JSON inside a decoded entry (for the local LRU and waiters), or None when
    the entry is not laid out exactly as costwatch writes it."""
    header = b'[1,%d,"%s",' % (generation, cost_text.encode())
    if entry.startswith(header) and entry.endswith(b"]"):
        return entry[len(header):-1]
    return None


class _Binder:
    """Normalises a call's arguments so ``f("q")`` and ``f(query="q")`` give the same key.

    Functions with only positional-or-keyword parameters (most retrievers) take a fast path
    without ``inspect.Signature.bind``.  ``None`` means the call does not bind (the function
    itself will raise its own ``TypeError``).
    """

    __slots__ = ("_sig", "_simple", "_names", "_defaults")

    def __init__(self, fn: Callable[..., Any]) -> None:
        try:
            sig: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            sig = None
        self._sig = sig
        params = list(sig.parameters.values()) if sig is not None else []
        self._simple = sig is not None and all(
            p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params
        )
        self._names = tuple(p.name for p in params)
        self._defaults = {p.name: p.default for p in params if p.default is not p.empty}

    def __call__(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> object:
        names = self._names
        if self._simple:
            given = len(args)
            if not kwargs and given == len(names):
                return args
            if given > len(names):
                return None
            values = list(args)
            used = 0
            for name in names[given:]:
                if name in kwargs:
                    values.append(kwargs[name])
                    used += 1
                elif name in self._defaults:
                    values.append(self._defaults[name])
                else:
                    return None
            if used != len(kwargs):
                return None
            return values
        if self._sig is None:
            return None
        try:
            bound = self._sig.bind(*args, **kwargs)
        except TypeError:
            return None
        bound.apply_defaults()
        return bound.arguments


def _key_part(text: str) -> str:
    """A namespace component for a Redis key: no braces (hash tag), colons or spaces; bounded."""
    if len(text) <= 64 and text.isprintable() and not any(c in text for c in "{}:% "):
        return text
    if len(text) > 64:
        return "h-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    out = []
    for ch in text:
        if ch in "{}:% " or not ch.isprintable():
            out.append("".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass")))
        else:
            out.append(ch)
    return "".join(out)


# ------------------------------------------------------------------------------------------
# Local LRU
# ------------------------------------------------------------------------------------------


LocalKey = Hashable
"""The call's canonical JSON, or for calls of plain str/int arguments a cheaper exact tuple."""


class _LocalLRU:
    """A small in-process LRU of encoded values with its own short TTL (thread-safe).

    It holds the value's JSON, not the value: every hit decodes a fresh copy, so a host that
    mutates what it got back cannot change what the next caller gets.  Reads take no lock
    (each OrderedDict operation is atomic under the GIL); writes and evictions do.
    """

    __slots__ = ("_data", "_lock", "_size", "_ttl", "_clock")

    def __init__(self, size: int, ttl_s: float, clock: Callable[[], float]) -> None:
        self._data: OrderedDict[LocalKey, tuple[float, bytes, Decimal]] = OrderedDict()
        self._lock = threading.Lock()
        self._size = size
        self._ttl = ttl_s
        self._clock = clock

    def get(self, key: LocalKey) -> tuple[float, bytes, Decimal] | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[0] <= self._clock():
            with self._lock:
                if self._data.get(key) is item:
                    del self._data[key]
            return None
        try:  # noqa: SIM105 - contextlib.suppress costs a context manager on the hot path
            self._data.move_to_end(key)
        except KeyError:  # evicted by another thread meanwhile: the copy we hold is still good
            pass
        return item

    def put(self, key: LocalKey, body: bytes, cost: Decimal) -> None:
        expires = self._clock() + self._ttl
        with self._lock:
            self._data[key] = (expires, body, cost)
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


# ------------------------------------------------------------------------------------------
# Per-runtime resolution
# ------------------------------------------------------------------------------------------


class _Resolved:
    """What a cache uses under one runtime: backend, breaker, sinks, local LRU."""

    __slots__ = ("rt", "backend", "_abackend", "breaker", "sinks", "service", "namespace",
                 "local", "is_redis", "gens", "_lock")

    def __init__(
        self,
        rt: _runtime.Runtime,
        backend: CacheBackend,
        breaker: CircuitBreaker,
        namespace: str,
        local: _LocalLRU | None,
        is_redis: bool,
    ) -> None:
        self.rt = rt
        self.backend = backend
        self._abackend: AsyncCacheBackend | None = None
        self.breaker = breaker
        self.sinks: tuple[Sink, ...] = rt.sinks
        self.service = rt.settings.service
        self.namespace = namespace
        self.local = local
        self.is_redis = is_redis
        self.gens: dict[str, tuple[float, int]] = {}
        """Namespace generations read recently: generation key -> (trusted until, generation)."""
        self._lock = threading.Lock()

    @property
    def abackend(self) -> AsyncCacheBackend:
        found = self._abackend
        if found is None:
            with self._lock:
                found = self._abackend
                if found is None:
                    found = self._abackend = self.backend.asyncio()
        return found


_twins_lock = threading.Lock()
_twins: dict[int, tuple[Any, MemoryBackend]] = {}


def _memory_twin(rt: _runtime.Runtime) -> MemoryBackend:
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


class _Flight:
    """One in-process computation of a key that concurrent callers wait for.

    ``shared`` is the value's JSON and its cost once known (each waiter decodes its own copy);
    ``through`` says the backend failed, so waiters call the function without the cache.
    Threads wait on ``event``; asyncio tasks on a future whose result is the flight.
    """

    __slots__ = ("event", "shared", "through")

    def __init__(self, threads: bool) -> None:
        self.event = threading.Event() if threads else None
        self.shared: tuple[bytes, Decimal] | None = None
        self.through = False


class _Lookup:
    """A lookup in progress: what the read and the miss path need, computed once."""

    __slots__ = ("site", "res", "tags", "material", "prefix", "digest", "key", "gen_key",
                 "generation", "local_key")

    def __init__(
        self,
        site: _Site,
        res: _Resolved,
        tags: Mapping[str, str],
        material: bytes,
        prefix: str,
        gen_key: str,
        local_key: LocalKey | None,
    ) -> None:
        self.site = site
        self.res = res
        self.tags = tags
        self.material = material
        self.local_key = local_key
        self.prefix = prefix
        self.digest = hashlib.sha256(material).hexdigest()
        self.key = prefix + self.digest
        self.gen_key = gen_key
        self.generation = 0

    @property
    def lock_key(self) -> str:
        return self.prefix + "lock:" + self.digest


class _Done:
    """The lookup settled the call: a hit (with its value), or call through (skip, error)."""

    __slots__ = ("value", "result")

    def __init__(self, value: object, result: str) -> None:
        self.value = value
        self.result = result


_SKIPPED = _Done(None, SKIP)
_ERRORED = _Done(None, ERROR)
_BROKEN = _Done(None, ERROR)
"""costwatch's own failure (already reported): call through."""


# ------------------------------------------------------------------------------------------
# The cache
# ------------------------------------------------------------------------------------------


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
    long a caller waits for another's computation of the same key.  ``generation_ttl`` > 0 lets
    a process trust the namespace generation it read for that many seconds, so a hit is one
    ``GET`` instead of an ``MGET`` of generation and entry; the price is that another process's
    ``invalidate()`` reaches this one only after up to that delay (this process's own is
    immediate).  The default 0 reads the generation with every entry.  ``key``, when given, is
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
        if isinstance(backend, str) and not backend.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("backend", backend, "a URL must start with redis://, rediss:// or unix://")
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
        self._lock = threading.Lock()
        self._resolved: _Resolved | None = None
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
        site = _Site(self, fn, source, stage, own_cost)
        with self._lock:
            self._sources[source] = None
        if inspect.iscoroutinefunction(fn):
            return cast(Callable[P, R], _async_wrapper(site, cast(Any, fn)))
        return _sync_wrapper(site, fn)

    def invalidate(self, tenant: str | None = None) -> None:
        """Drop every entry of this cache for ``tenant`` (default: the current one) in O(1).

        Increments the namespace generation: entries of older generations are never served again
        and expire with their TTL.  Other processes' local LRUs see it within ``local_ttl``.
        Raises :class:`BackendError` (a ``ConnectionError``) when the backend is unreachable:
        the host asked for it, and keeping stale entries silently would be worse.
        """
        res = self._resolve(_runtime.runtime())
        tenant = current_tags().get("tenant", "") if tenant is None else tenant
        if res.local is not None:
            res.local.clear()
        for source in self._source_names():
            gen_key = self._gen_key(res, tenant, source)
            self._trust(res, gen_key, res.backend.bump(gen_key))

    async def ainvalidate(self, tenant: str | None = None) -> None:
        """:meth:`invalidate` through the asyncio backend."""
        res = self._resolve(_runtime.runtime())
        tenant = current_tags().get("tenant", "") if tenant is None else tenant
        if res.local is not None:
            res.local.clear()
        for source in self._source_names():
            gen_key = self._gen_key(res, tenant, source)
            self._trust(res, gen_key, await res.abackend.bump(gen_key))

    def _trust(self, res: _Resolved, gen_key: str, generation: int) -> None:
        """Remember a generation just read or written, for ``generation_ttl`` seconds."""
        if self.generation_ttl:
            if len(res.gens) > 4096:
                res.gens.clear()
            res.gens[gen_key] = (self._clock() + self.generation_ttl, generation)

    def _trusted(self, res: _Resolved, gen_key: str) -> int | None:
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

    def _resolve(self, rt: _runtime.Runtime) -> _Resolved:
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
                backend, is_redis = _memory_twin(rt), False
            breaker = self._breaker_arg or CircuitBreaker()
            local = (
                _LocalLRU(self.local_size, self.local_ttl, self._clock)
                if self.local_size
                else None
            )
            namespace = self.namespace or rt.settings.service
            res = self._resolved = _Resolved(rt, backend, breaker, namespace, local, is_redis)
            return res

    def _gen_key(self, res: _Resolved, tenant: str, source: str) -> str:
        return _namespace_tag(res.namespace, tenant, source) + "gen"

    def _ttl_with_jitter(self) -> int:
        if not self.jitter:
            return self._ttl_ms
        return max(1, int(self._ttl_ms * (1.0 - self.jitter * random.random())))

    def _backend_down(self, res: _Resolved, exc: BaseException) -> None:
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


def _namespace_tag(namespace: str, tenant: str, source: str) -> str:
    """``cw:c:{service:tenant:source}:`` — one Redis Cluster hash tag per namespace."""
    return f"{_KEY_PREFIX}{{{_key_part(namespace)}:{_key_part(tenant)}:{_key_part(source)}}}:"


def _check_positive(field: str, value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not (
        math.isfinite(value) and value > 0
    ):
        raise ConfigError(field, value, "must be a positive number of seconds")


class _Site:
    """One wrapped function: its key material, in-flight computations and event emission."""

    __slots__ = ("cache", "fn", "source", "stage", "own_cost", "name", "_binder", "_const",
                 "_flights", "_aflights", "_lock", "_ns_keys", "_events")

    def __init__(
        self,
        cache: RetrievalCache,
        fn: Callable[..., Any],
        source: str,
        stage: str,
        own_cost: OwnCost | None,
    ) -> None:
        self.cache = cache
        self.fn = fn
        self.source = source
        self.stage = stage
        self.own_cost = own_cost
        self.name = cache.name or source
        self._binder = _Binder(fn)
        qualname = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"
        self._const = (source, cache.version, stage, qualname)
        self._flights: dict[str, _Flight] = {}
        self._aflights: dict[
            tuple[int, str], tuple[asyncio.AbstractEventLoop, asyncio.Future[_Flight]]
        ] = {}
        self._lock = threading.Lock()
        self._ns_keys: dict[tuple[str, str], tuple[str, str]] = {}
        self._events: dict[str, tuple[Mapping[str, str], Decimal, _Resolved, CacheEvent]] = {}

    # -- events ----------------------------------------------------------------------------
    def emit(self, res: _Resolved, tags: Mapping[str, str], result: str, saved: Decimal) -> None:
        """Hand one ``CacheEvent`` to every sink and note the result for the decorator.

        Events are immutable, so the last one built per result is reused while the caller's tags
        and the saved amount are the same ones (the common case for hot keys): no allocation.
        """
        last_lookup_var.set(result)
        try:
            memo = self._events.get(result)
            if memo is not None and memo[0] is tags and memo[1] is saved and memo[2] is res:
                event = memo[3]
            else:
                event = CacheEvent(
                    self.name,
                    result,
                    saved,
                    res.service,
                    tags.get("feature", ""),
                    tags.get("team", ""),
                    tags.get("tenant", ""),
                )
                self._events[result] = (tags, saved, res, event)
            for sink in res.sinks:
                sink.on_cache(event)
        except Exception as exc:
            errors.report("cache", exc)

    # -- keys ------------------------------------------------------------------------------
    def material(self, res: _Resolved, tenant: str, args: tuple[Any, ...],
                 kwargs: Mapping[str, Any]) -> bytes | None:
        """The canonical JSON the key is hashed from, or None when the call cannot be keyed."""
        key_fn = self.cache._key_fn
        if key_fn is not None:
            try:
                values: object = key_fn(*args, **kwargs)
            except Exception:
                return None
        else:
            values = self._binder(args, kwargs)
            if values is None:
                return None
        if not _plain_json(values, True):
            return None
        try:
            return orjson.dumps((res.namespace, tenant, self._const, values),
                                option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            return None

    def keys(self, res: _Resolved, tenant: str) -> tuple[str, str]:
        """``(generation key, key prefix)``: one hash tag per service/tenant/source."""
        ns = self._ns_keys.get((res.namespace, tenant))
        if ns is None:
            tag = _namespace_tag(res.namespace, tenant, self.source)
            ns = (tag + "gen", tag)
            if len(self._ns_keys) > 4096:
                self._ns_keys.clear()
            self._ns_keys[(res.namespace, tenant)] = ns
        return ns

    # -- lookup ----------------------------------------------------------------------------
    def begin(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> _Done | _Lookup:
        """Everything before a backend round trip: key, local LRU, breaker."""
        res = self.cache._resolve(_runtime.runtime())
        tags = current_tags()
        tenant = tags.get("tenant", "")
        local = res.local
        local_key: LocalKey | None = None
        if local is not None:
            local_key = self.local_key(tenant, args, kwargs)
            if local_key is not None:
                item = local.get(local_key)
                if item is not None:
                    value = orjson.loads(item[1])
                    self.emit(res, tags, HIT, item[2])
                    return _Done(value, HIT)
        material = self.material(res, tenant, args, kwargs)
        if material is None:
            self.emit(res, tags, SKIP, _ZERO)
            return _SKIPPED
        if local is not None and local_key is None:
            local_key = material
            item = local.get(material)
            if item is not None:
                value = orjson.loads(item[1])
                self.emit(res, tags, HIT, item[2])
                return _Done(value, HIT)
        if not res.breaker.allow():
            self.emit(res, tags, ERROR, _ZERO)
            return _ERRORED
        gen_key, prefix = self.keys(res, tenant)
        return _Lookup(self, res, tags, material, prefix, gen_key, local_key)

    def local_key(self, tenant: str, args: tuple[Any, ...],
                  kwargs: Mapping[str, Any]) -> LocalKey | None:
        """A cheap exact key for the local LRU when every argument is a str or an int.

        Raw call shape, not normalised: ``f("q")`` and ``f(query="q")`` are two local entries
        of the same Redis entry, which is harmless.  None: use the canonical JSON instead.
        """
        if self.cache._key_fn is not None:
            return None
        for arg in args:
            if type(arg) not in _EXACT_KEYABLE:
                return None
        if not kwargs:
            return (self, tenant, args)
        for arg in kwargs.values():
            if type(arg) not in _EXACT_KEYABLE:
                return None
        return (self, tenant, args, tuple(kwargs.items()))

    def served(self, lk: _Lookup, entry: bytes | None, generation: int,
               flight: _Flight | None = None) -> _Done | None:
        """The backend answered: a current entry is a hit, anything else (garbage too) a miss.

        A hit's JSON goes to the local LRU and to the waiters of ``flight``, if any.
        """
        lk.generation = generation
        if entry is None:
            return None
        decoded = decode_entry(entry, generation)
        if decoded is None:
            return None
        value, cost, cost_text = decoded
        local = lk.res.local
        if local is not None or flight is not None:
            body = entry_body(entry, generation, cost_text)
            if body is not None:
                if local is not None and lk.local_key is not None:
                    local.put(lk.local_key, body, cost)
                if flight is not None:
                    flight.shared = (body, cost)
        self.emit(lk.res, lk.tags, HIT, cost)
        return _Done(value, HIT)

    def failed(self, lk: _Lookup, exc: BaseException) -> _Done:
        self.cache._backend_down(lk.res, exc)
        self.emit(lk.res, lk.tags, ERROR, _ZERO)
        return _ERRORED

    # -- after computing -------------------------------------------------------------------
    def encode(
        self, lk: _Lookup, value: object, cost: Decimal
    ) -> tuple[bytes | None, bytes | None, str]:
        """``(body, entry, result)``: the value's JSON (shareable with waiters), the entry to
        store, and what the lookup counts as.

        A value that is not plain JSON or is larger than ``max_value_bytes`` is not stored
        (``skip``); an empty one is not stored without ``cache_empty`` (still a ``miss``).
        """
        if not _plain_json(value, False):
            return None, None, SKIP
        try:
            body = orjson.dumps(value)
        except orjson.JSONEncodeError:
            return None, None, SKIP
        cache = self.cache
        if _is_empty(value) and not cache.cache_empty:
            return body, None, MISS
        entry = _header(lk.generation, cost) + body + b"]"
        if len(entry) > cache.max_value_bytes:
            return body, None, SKIP
        return body, entry, MISS

    def computed_cost(self, scope_cost: Decimal, value: object) -> Decimal:
        own = self.own_cost
        if own is None:
            return scope_cost
        extra = own(value)
        return scope_cost + extra if extra is not None else scope_cost

    def finish_miss(self, lk: _Lookup, body: bytes | None, entry: bytes | None, cost: Decimal,
                    result: str) -> None:
        local, local_key = lk.res.local, lk.local_key
        if entry is not None and body is not None and local is not None and local_key is not None:
            local.put(local_key, body, cost)
        self.emit(lk.res, lk.tags, result, _ZERO)

    # -- single flight: threads -------------------------------------------------------------
    def join_or_lead(self, key: str) -> tuple[_Flight, bool]:
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight, False
            flight = self._flights[key] = _Flight(threads=True)
            return flight, True

    def land(self, key: str, flight: _Flight) -> None:
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
        assert flight.event is not None
        flight.event.set()

    # -- single flight: asyncio -------------------------------------------------------------
    def ajoin_or_lead(self, key: str) -> tuple[asyncio.Future[_Flight], _Flight | None]:
        """``(future, flight)``: flight is None for a waiter, the new flight for the leader."""
        loop = asyncio.get_running_loop()
        ident = (id(loop), key)
        with self._lock:
            found = self._aflights.get(ident)
            if found is not None and found[0] is loop:
                return found[1], None
            future: asyncio.Future[_Flight] = loop.create_future()
            self._aflights[ident] = (loop, future)
        return future, _Flight(threads=False)

    def aland(self, key: str, future: asyncio.Future[_Flight], flight: _Flight) -> None:
        ident = (id(asyncio.get_running_loop()), key)
        with self._lock:
            found = self._aflights.get(ident)
            if found is not None and found[1] is future:
                del self._aflights[ident]
        if not future.done():
            future.set_result(flight)


# ------------------------------------------------------------------------------------------
# Wrappers: the sync and async call paths
#
# The host's function is always called outside costwatch's exception handlers, so its own
# exceptions are never chained to (or replaced by) costwatch's.
# ------------------------------------------------------------------------------------------


def _sync_wrapper(site: _Site, fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def cached(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            step = site.begin(args, kwargs)
            if isinstance(step, _Lookup):
                try:
                    generation, entry = _sync_read(step)
                except BackendError as exc:
                    step = site.failed(step, exc)
                else:
                    step.res.breaker.record_success()
                    step = site.served(step, entry, generation) or step
        except Exception as exc:
            errors.report("cache", exc)
            step = _BROKEN
        if isinstance(step, _Done):
            if step.result is HIT:
                return cast(R, step.value)
            value = fn(*args, **kwargs)
            last_lookup_var.set(step.result)  # again: fn may have run cached calls itself
            return value
        return _sync_miss(step, fn, args, kwargs)

    return cached


def _sync_read(lk: _Lookup) -> tuple[int, bytes | None]:
    """The namespace generation and the entry: one ``MGET``, or one ``GET`` while the
    generation read recently is trusted (``generation_ttl``) and the entry does not claim a
    newer one."""
    cache, res = lk.site.cache, lk.res
    known = cache._trusted(res, lk.gen_key)
    if known is not None:
        entry = res.backend.read_entry(lk.key)
        claimed = entry_generation(entry) if entry is not None else None
        if claimed is None or claimed <= known:
            return known, entry
    generation, entry = res.backend.read(lk.gen_key, lk.key)
    cache._trust(res, lk.gen_key, generation)
    return generation, entry


async def _async_read(lk: _Lookup) -> tuple[int, bytes | None]:
    """:func:`_sync_read` through the asyncio backend."""
    cache, res = lk.site.cache, lk.res
    known = cache._trusted(res, lk.gen_key)
    if known is not None:
        entry = await res.abackend.read_entry(lk.key)
        claimed = entry_generation(entry) if entry is not None else None
        if claimed is None or claimed <= known:
            return known, entry
    generation, entry = await res.abackend.read(lk.gen_key, lk.key)
    cache._trust(res, lk.gen_key, generation)
    return generation, entry


def _sync_miss(lk: _Lookup, fn: Callable[..., R], args: tuple[Any, ...],
               kwargs: Mapping[str, Any]) -> R:
    """A miss: one thread per key leads; the others wait (bounded) for its value."""
    site = lk.site
    flight, leader = site.join_or_lead(lk.key)
    if leader:
        try:
            return _sync_lead(lk, fn, args, kwargs, flight, wait=True, just_read=True)
        finally:
            site.land(lk.key, flight)
    assert flight.event is not None
    arrived = flight.event.wait(site.cache.lock_timeout)
    if arrived and flight.through:
        site.emit(lk.res, lk.tags, ERROR, _ZERO)
        value = fn(*args, **kwargs)
        last_lookup_var.set(ERROR)
        return value
    if arrived and flight.shared is not None:
        body, cost = flight.shared
        try:
            shared_value = orjson.loads(body)  # a copy of its own for each waiter
            site.emit(lk.res, lk.tags, HIT, cost)
        except Exception as exc:
            errors.report("cache", exc)
        else:
            return cast(R, shared_value)
    # The leader failed (its exception is its own) or is too slow: compute ourselves, without
    # waiting for a lock again when we already waited our time.
    return _sync_lead(lk, fn, args, kwargs, None, wait=arrived, just_read=False)


def _sync_lead(lk: _Lookup, fn: Callable[..., R], args: tuple[Any, ...],
               kwargs: Mapping[str, Any], flight: _Flight | None, *, wait: bool,
               just_read: bool) -> R:
    """Compute the key for this process: take the cross-process lock or wait for its holder.

    ``just_read``: the entry was read missing a moment ago, so first try a plain ``SET NX``;
    otherwise (and while another process holds the lock) the acquire script re-reads the
    entry and tries the lock in one round trip.
    """
    site, res = lk.site, lk.res
    token = os.urandom(12).hex()
    locked = failed = False
    try:
        if just_read:
            locked = res.backend.lock(lk.lock_key, token, site.cache._lock_ms)
        deadline = time.monotonic() + (site.cache.lock_timeout if wait else 0.0)
        poll = _POLL_FIRST_S
        while not locked:
            status, generation, entry = res.backend.acquire(
                lk.gen_key, lk.key, lk.lock_key, token, site.cache._lock_ms
            )
            if status == HAVE_ENTRY:
                done = site.served(lk, entry, generation, flight)
                if done is not None:
                    return cast(R, done.value)
                break  # garbage behind a plausible prefix: compute and overwrite it
            lk.generation = generation
            site.cache._trust(res, lk.gen_key, generation)
            if status == LOCKED:
                locked = True
                break
            if time.monotonic() + poll > deadline:
                break
            time.sleep(poll)
            poll = min(poll * 2, _POLL_MAX_S)
    except BackendError as exc:
        site.failed(lk, exc)
        if flight is not None:
            flight.through = True
        failed = True
    except Exception as exc:
        errors.report("cache", exc)
        failed = True
    if failed:
        value = fn(*args, **kwargs)
        last_lookup_var.set(ERROR)
        return value
    return _sync_compute(lk, fn, args, kwargs, flight, locked=locked, token=token)


def _sync_compute(lk: _Lookup, fn: Callable[..., R], args: tuple[Any, ...],
                  kwargs: Mapping[str, Any], flight: _Flight | None, *, locked: bool,
                  token: str) -> R:
    """Run the function inside a cost scope and store its value with what it cost."""
    site, res = lk.site, lk.res
    try:
        with cost_scope() as scope:
            value = fn(*args, **kwargs)
    except BaseException:
        if locked:
            _sync_release(lk, token)
        raise
    try:
        cost = site.computed_cost(scope.cost_usd, value)
        body, entry, result = site.encode(lk, value, cost)
        if flight is not None and body is not None:
            flight.shared = (body, cost)
        ttl = site.cache._ttl_with_jitter()
        if locked:
            res.backend.write_release(lk.key, entry, ttl, lk.lock_key, token)
        elif entry is not None:
            res.backend.write(lk.key, entry, ttl)
        site.finish_miss(lk, body, entry, cost, result)
    except BackendError as exc:
        site.failed(lk, exc)
    except Exception as exc:
        errors.report("cache", exc)
    return value


def _sync_release(lk: _Lookup, token: str) -> None:
    """The function raised: free the lock at once so other processes need not wait it out."""
    try:
        lk.res.backend.write_release(lk.key, None, 1, lk.lock_key, token)
    except BackendError as exc:
        lk.site.cache._backend_down(lk.res, exc)
    except Exception as exc:
        errors.report("cache", exc)


def _async_wrapper(site: _Site, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    @functools.wraps(fn)
    async def cached(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            step = site.begin(args, kwargs)
        except Exception as exc:
            errors.report("cache", exc)
            step = _BROKEN
        if isinstance(step, _Done):
            if step.result is HIT:
                return cast(R, step.value)
            value = await fn(*args, **kwargs)
            last_lookup_var.set(step.result)
            return value
        return await _async_miss(step, fn, args, kwargs)

    return cached


async def _async_miss(lk: _Lookup, fn: Callable[..., Awaitable[R]], args: tuple[Any, ...],
                      kwargs: Mapping[str, Any]) -> R:
    """One task per key and event loop goes to Redis (even for the read: 200 tasks on one key
    make one round trip, not 200); the others wait for what it found or computed."""
    site = lk.site
    future, flight = site.ajoin_or_lead(lk.key)
    if flight is not None:
        try:
            return await _async_lead(lk, fn, args, kwargs, flight, wait=True, read_first=True)
        finally:
            site.aland(lk.key, future, flight)
    try:
        shared_flight: _Flight | None = await asyncio.wait_for(
            asyncio.shield(future), site.cache.lock_timeout
        )
    except TimeoutError:
        shared_flight = None
    if shared_flight is not None and shared_flight.through:
        site.emit(lk.res, lk.tags, ERROR, _ZERO)
        value = await fn(*args, **kwargs)
        last_lookup_var.set(ERROR)
        return value
    if shared_flight is not None and shared_flight.shared is not None:
        body, cost = shared_flight.shared
        try:
            shared_value = orjson.loads(body)
            site.emit(lk.res, lk.tags, HIT, cost)
        except Exception as exc:
            errors.report("cache", exc)
        else:
            return cast(R, shared_value)
    return await _async_lead(lk, fn, args, kwargs, None, wait=shared_flight is not None,
                             read_first=False)


async def _async_lead(lk: _Lookup, fn: Callable[..., Awaitable[R]], args: tuple[Any, ...],
                      kwargs: Mapping[str, Any], flight: _Flight | None, *, wait: bool,
                      read_first: bool) -> R:
    site, res = lk.site, lk.res
    token = os.urandom(12).hex()
    locked = failed = False
    try:
        backend = res.abackend
        if read_first:
            generation, entry = await _async_read(lk)
            res.breaker.record_success()
            done = site.served(lk, entry, generation, flight)
            if done is not None:
                return cast(R, done.value)
            # The common miss: take the lock with a plain SET NX (cheaper than the script).
            locked = await backend.lock(lk.lock_key, token, site.cache._lock_ms)
        deadline = time.monotonic() + (site.cache.lock_timeout if wait else 0.0)
        poll = _POLL_FIRST_S
        while not locked:
            status, generation, entry = await backend.acquire(
                lk.gen_key, lk.key, lk.lock_key, token, site.cache._lock_ms
            )
            if status == HAVE_ENTRY:
                done = site.served(lk, entry, generation, flight)
                if done is not None:
                    return cast(R, done.value)
                break
            lk.generation = generation
            site.cache._trust(res, lk.gen_key, generation)
            if status == LOCKED:
                locked = True
                break
            if time.monotonic() + poll > deadline:
                break
            await asyncio.sleep(poll)
            poll = min(poll * 2, _POLL_MAX_S)
    except BackendError as exc:
        site.failed(lk, exc)
        if flight is not None:
            flight.through = True
        failed = True
    except Exception as exc:
        errors.report("cache", exc)
        failed = True
    if failed:
        value = await fn(*args, **kwargs)
        last_lookup_var.set(ERROR)
        return value
    return await _async_compute(lk, fn, args, kwargs, flight, locked=locked, token=token)


async def _async_compute(lk: _Lookup, fn: Callable[..., Awaitable[R]], args: tuple[Any, ...],
                         kwargs: Mapping[str, Any], flight: _Flight | None, *, locked: bool,
                         token: str) -> R:
    site, res = lk.site, lk.res
    try:
        with cost_scope() as scope:
            value = await fn(*args, **kwargs)
    except BaseException:
        if locked:
            await _async_release(lk, token)
        raise
    try:
        cost = site.computed_cost(scope.cost_usd, value)
        body, entry, result = site.encode(lk, value, cost)
        if flight is not None and body is not None:
            flight.shared = (body, cost)
        ttl = site.cache._ttl_with_jitter()
        if locked:
            await res.abackend.write_release(lk.key, entry, ttl, lk.lock_key, token)
        elif entry is not None:
            await res.abackend.write(lk.key, entry, ttl)
        site.finish_miss(lk, body, entry, cost, result)
    except BackendError as exc:
        site.failed(lk, exc)
    except Exception as exc:
        errors.report("cache", exc)
    return value


async def _async_release(lk: _Lookup, token: str) -> None:
    try:
        await lk.res.abackend.write_release(lk.key, None, 1, lk.lock_key, token)
    except BackendError as exc:
        lk.site.cache._backend_down(lk.res, exc)
    except Exception as exc:
        errors.report("cache", exc)

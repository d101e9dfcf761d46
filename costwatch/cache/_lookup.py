"""One cached function's lookup steps, shared by the sync and async call paths.

Everything around the backend round trips: the key (canonical JSON, namespace hash tag), the
local LRU, the breaker, turning what the backend answered into a hit or a miss, encoding what
the function computed, and one ``CacheEvent`` per lookup — whose result also goes to
``last_lookup_var`` for the decorator wrapping the cached function.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, NamedTuple

from costwatch._core.breaker import CircuitBreaker
from costwatch._core.context import ATTRIBUTION_TAGS, TagSet, tags_var
from costwatch._core.failopen import errors
from costwatch._core.memo import BoundedMemo
from costwatch._core.record import ZERO
from costwatch._core.sink import CacheEvent
from costwatch.accounting._tally import cache_key
from costwatch.cache._codec import (
    Binder,
    decode_entry,
    encode_entry,
    encode_value,
    entry_body,
    is_empty,
    key_material,
    namespace_tag,
)
from costwatch.cache._flight import Flight, Flights
from costwatch.cache._identity import function_identity
from costwatch.cache._local import EXACT_KEYABLE, LocalEntry, LocalKey
from costwatch.cache._policy import CachePolicy
from costwatch.cache._resolved import Resolved, Resolver

last_lookup_var: ContextVar[str] = ContextVar("costwatch_cache_lookup", default="")
"""Result of the latest cache lookup in this context: ``hit``, ``miss``, ``error`` or ``skip``.

Set just before a cached function returns, so the decorator wrapping it can mark its
``CostRecord.cache_hit``."""

HIT: Final = "hit"
MISS: Final = "miss"
ERROR: Final = "error"
SKIP: Final = "skip"

TENANT = ATTRIBUTION_TAGS.index("tenant")

_MAX_KEYED = 4096
"""At most this many namespace key prefixes, and as many exact local keys, are memoised."""

OwnCost = Callable[[Any], Decimal | None]
"""Given a miss's result, the cost of the wrapping decorator's own record (priced retrieval,
embedding usage read from the result): it is emitted outside the cached function, so the cost
scope cannot see it."""


Keys = tuple[str, str, str, str]
"""``(entry key, generation key, key prefix, digest)`` of one call."""


class Lookup:
    """A lookup in progress: what the read and the miss path need, computed once."""

    __slots__ = (
        "site",
        "res",
        "tags",
        "key",
        "gen_key",
        "prefix",
        "digest",
        "generation",
        "local_key",
        "max_bytes",
        "breaker",
    )

    def __init__(
        self,
        site: Site,
        res: Resolved,
        tags: TagSet,
        keys: Keys,
        local_key: LocalKey | None,
        breaker: CircuitBreaker,
    ) -> None:
        self.site = site
        self.res = res
        self.tags = tags
        self.key, self.gen_key, self.prefix, self.digest = keys
        self.local_key = local_key
        self.generation = 0
        self.max_bytes = site.policy.max_value_bytes
        """The most bytes of an entry to read: a longer one is a miss, overwritten."""
        self.breaker = breaker
        """Guards the backend (the node of this entry, on a Redis Cluster)."""

    @property
    def lock_key(self) -> str:
        return self.prefix + "lock:" + self.digest


class Stored(NamedTuple):
    """What a miss stores: the value's JSON, the entry (None: not stored), what it cost, what
    the lookup counts as, and the entry's TTL."""

    body: bytes | None
    entry: bytes | None
    cost: Decimal
    result: str
    ttl_ms: int


Done = tuple[Any, str]
"""The lookup settled the call: ``(value, HIT)``, or ``(None, result)`` to call through (skip,
error).  A plain tuple: building it costs a fifth of a small object's ``__init__``."""

SKIPPED: Done = (None, SKIP)
ERRORED: Done = (None, ERROR)
BROKEN: Done = (None, ERROR)
"""costwatch's own failure (already reported): call through."""


@dataclass(slots=True, eq=False)
class Site:
    """One wrapped function: its key material, in-flight computations and event emission."""

    policy: CachePolicy
    resolver: Resolver
    fn: Callable[..., Any]
    source: str
    stage: str
    own_cost: OwnCost | None
    name: str = field(init=False)
    flights: Flights = field(init=False, default_factory=Flights)
    _binder: Binder = field(init=False)
    _const: tuple[str, ...] = field(init=False)
    _ns_keys: BoundedMemo[tuple[str, str], tuple[str, str]] = field(
        init=False, default_factory=lambda: BoundedMemo(_MAX_KEYED)
    )
    _keyed: BoundedMemo[LocalKey, tuple[str, Keys]] = field(
        init=False, default_factory=lambda: BoundedMemo(_MAX_KEYED)
    )
    """Exact call key -> (namespace, keys): a repeated call is not hashed again."""
    _events: dict[str, tuple[TagSet, Decimal, Resolved, CacheEvent, CacheEvent]] = field(
        init=False, default_factory=dict
    )
    """Result -> (tags, saved, resolved, event, tally key) of the latest lookup."""

    def __post_init__(self) -> None:
        policy, fn = self.policy, self.fn
        self.name = policy.name or self.source
        self._binder = Binder(fn)
        self._const = (
            self.source,
            policy.version,
            self.stage,
            function_identity(fn, policy.key_namespace),
        )

    # -- events ----------------------------------------------------------------------------
    def emit(self, res: Resolved, tags: TagSet, result: str, saved: Decimal) -> None:
        """Count one ``CacheEvent`` (in the runtime's tally, and through any other sink) and
        note the result for the decorator.

        Events are immutable, so the last one built per result is reused while the caller's tags
        and the saved amount are the same ones (the common case for hot keys): no allocation.
        """
        last_lookup_var.set(result)
        try:
            memo = self._events.get(result)
            if memo is not None and memo[0] is tags and memo[1] is saved and memo[2] is res:
                event, key = memo[3], memo[4]
            else:
                feature, team, tenant, _ = tags.attribution
                event = CacheEvent(self.name, result, saved, res.service, feature, team, tenant)
                key = cache_key(event)
                self._events[result] = (tags, saved, res, event, key)
            res.tally.add_cache(key, saved)
            for sink in res.sinks:
                sink.on_cache(event)
        except Exception as exc:
            errors.report("cache", exc)

    # -- keys ------------------------------------------------------------------------------
    def material(
        self, res: Resolved, tenant: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> bytes | None:
        """The canonical JSON the key is hashed from, or None when the call cannot be keyed."""
        key_fn = self.policy.key_fn
        if key_fn is not None:
            try:
                values: object = key_fn(*args, **kwargs)
            except Exception:
                return None
        else:
            values = self._binder(args, kwargs)
            if values is None:
                return None
        return key_material(res.namespace, tenant, self._const, values)

    def keys(self, res: Resolved, tenant: str) -> tuple[str, str]:
        """``(generation key, key prefix)``: one hash tag per service/tenant/source."""
        ns = self._ns_keys.get((res.namespace, tenant))
        if ns is None:
            tag = namespace_tag(res.namespace, tenant, self.source)
            ns = self._ns_keys.keep((res.namespace, tenant), (tag + "gen", tag))
        return ns

    # -- lookup ----------------------------------------------------------------------------
    def begin(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Done | Lookup:
        """Everything before a backend round trip: the tenant rule, key, local LRU, breaker."""
        res = self.resolver.current()
        tags = tags_var.get()
        tenant = tags.attribution[TENANT]
        if not tenant and self.policy.tenant_required:
            self.emit(res, tags, SKIP, ZERO)
            return SKIPPED
        local = res.local
        local_key = self.local_key(tenant, args, kwargs)
        if local is not None and local_key is not None:
            item = local.get(local_key)
            if item is not None:
                return self.served_locally(res, tags, item)
        exact = local_key is not None
        keyed = self._keyed.get(local_key) if exact else None
        if keyed is not None and keyed[0] == res.namespace:
            keys = keyed[1]
        else:
            material = self.material(res, tenant, args, kwargs)
            if material is None:
                self.emit(res, tags, SKIP, ZERO)
                return SKIPPED
            if not exact:
                local_key = material
                if local is not None:
                    item = local.get(material)
                    if item is not None:
                        return self.served_locally(res, tags, item)
            digest = hashlib.sha256(material).hexdigest()
            gen_key, prefix = self.keys(res, tenant)
            keys = (prefix + digest, gen_key, prefix, digest)
            if exact:
                self._keyed.keep(local_key, (res.namespace, keys))
        breaker = res.breaker_for(keys[1])
        if not breaker.allow():
            self.emit(res, tags, ERROR, ZERO)
            return ERRORED
        return Lookup(self, res, tags, keys, local_key, breaker)

    def served_locally(self, res: Resolved, tags: TagSet, item: LocalEntry) -> Done:
        """A local LRU hit: a fresh copy of the value."""
        value = item.copy(item.value)
        self.emit(res, tags, HIT, item.cost)
        return (value, HIT)

    def local_key(
        self, tenant: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> LocalKey | None:
        """A cheap exact key when every argument is a str or an int: for the local LRU, and
        to find the Redis keys of a repeated call without hashing its canonical JSON again.

        Raw call shape, not normalised: ``f("q")`` and ``f(query="q")`` are two local entries
        of the same Redis entry, which is harmless.  None: use the canonical JSON instead.
        """
        if self.policy.key_fn is not None:
            return None
        for arg in args:
            if type(arg) not in EXACT_KEYABLE:
                return None
        if not kwargs:
            return (self, tenant, args)
        for arg in kwargs.values():
            if type(arg) not in EXACT_KEYABLE:
                return None
        return (self, tenant, args, tuple(kwargs.items()))

    def served(
        self, lk: Lookup, entry: bytes | None, generation: int, flight: Flight | None = None
    ) -> Done | None:
        """The backend answered: a current entry is a hit, anything else (garbage, a value
        larger than ``max_value_bytes`` cut short by the bounded read) a miss.

        A hit's JSON goes to the local LRU and to the waiters of ``flight``, if any.
        """
        lk.generation = generation
        if entry is None or len(entry) > lk.max_bytes:
            return None
        decoded = decode_entry(entry, generation)
        if decoded is None:
            return None
        value, cost, cost_text = decoded
        local = lk.res.local
        shared = flight is not None and flight.waited
        if local is not None or shared:
            body = entry_body(entry, generation, cost_text)
            if body is not None:
                if local is not None and lk.local_key is not None:
                    local.put(lk.local_key, body, cost)
                if flight is not None and shared:
                    flight.shared = (body, cost)
        self.emit(lk.res, lk.tags, HIT, cost)
        return (value, HIT)

    def failed(self, lk: Lookup, exc: BaseException) -> Done:
        lk.res.backend_down(exc, lk.breaker)
        self.emit(lk.res, lk.tags, ERROR, ZERO)
        return ERRORED

    # -- after computing -------------------------------------------------------------------
    def computed(
        self, lk: Lookup, value: object, scope_cost: Decimal, flight: Flight | None
    ) -> Stored:
        """What a miss stores: the value's entry, priced with the calls made inside the function
        and this site's own record; its JSON goes to the waiters of ``flight``, if any."""
        cost = scope_cost
        if self.own_cost is not None:
            extra = self.own_cost(value)
            if extra is not None:
                cost += extra
        body, entry, result = self.encode(lk, value, cost)
        if flight is not None and body is not None:
            flight.shared = (body, cost)
        return Stored(body, entry, cost, result, self.policy.entry_ttl_ms())

    def encode(
        self, lk: Lookup, value: object, cost: Decimal
    ) -> tuple[bytes | None, bytes | None, str]:
        """``(body, entry, result)``: the value's JSON (shareable with waiters), the entry to
        store, and what the lookup counts as.

        A value that is not plain JSON or is larger than ``max_value_bytes`` is not stored
        (``skip``); an empty one is not stored without ``cache_empty`` (still a ``miss``).
        """
        body = encode_value(value)
        if body is None:
            return None, None, SKIP
        policy = self.policy
        if is_empty(value) and not policy.cache_empty:
            return body, None, MISS
        entry = encode_entry(lk.generation, cost, body)
        if len(entry) > policy.max_value_bytes:
            return body, None, SKIP
        return body, entry, MISS

    def finish_miss(self, lk: Lookup, stored: Stored) -> None:
        """The miss was stored (or could not be): the local LRU keeps it, and it is counted."""
        local, local_key = lk.res.local, lk.local_key
        if (
            stored.entry is not None
            and stored.body is not None
            and local is not None
            and local_key is not None
        ):
            local.put(local_key, stored.body, stored.cost)
        self.emit(lk.res, lk.tags, stored.result, ZERO)

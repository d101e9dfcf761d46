"""``CachePolicy``: what one ``RetrievalCache`` was configured with, validated once.

The lookup steps (``_lookup``) and the call paths (``_calls``) read their rules from here — the
TTL and its jitter, the key's namespace, version and function identity, size limits, the tenant
rule, the stampede lock — never from the ``RetrievalCache`` facade.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

from costwatch._core.errors import ConfigError


class CachePolicy:
    """The validated settings of one cache (see ``RetrievalCache`` for what each one means)."""

    __slots__ = (
        "ttl",
        "namespace",
        "version",
        "max_value_bytes",
        "local_size",
        "local_ttl",
        "cache_empty",
        "lock_timeout",
        "lock_ms",
        "generation_ttl",
        "jitter",
        "name",
        "key_fn",
        "key_namespace",
        "tenant_required",
        "_ttl_ms",
    )

    def __init__(
        self,
        *,
        ttl: float,
        namespace: str | None,
        version: str | int | None,
        max_value_bytes: int,
        local_size: int,
        cache_empty: bool,
        local_ttl: float,
        name: str | None,
        lock_timeout: float,
        generation_ttl: float,
        jitter: float,
        key: Callable[..., Any] | None,
        key_namespace: str | None,
        tenant_required: bool,
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
        if namespace is not None and not namespace:
            raise ConfigError("namespace", namespace, "must not be empty")
        if key_namespace is not None and (not isinstance(key_namespace, str) or not key_namespace):
            raise ConfigError("key_namespace", key_namespace, "must be a non-empty string")
        if key is not None and not callable(key):
            raise ConfigError("key", key, "must be a callable")
        self.ttl = float(ttl)
        self.namespace = namespace
        """Replaces the service name in keys (None: the service's name)."""
        self.version = "" if version is None else str(version)
        self.max_value_bytes = max_value_bytes
        """The largest entry stored, and the most bytes a read fetches."""
        self.local_size = local_size
        self.local_ttl = min(float(local_ttl), self.ttl)
        self.cache_empty = cache_empty
        self.lock_timeout = float(lock_timeout)
        self.lock_ms = max(1, int(self.lock_timeout * 1000))
        self.generation_ttl = float(generation_ttl)
        self.jitter = float(jitter)
        self.name = name or ""
        """The explicit name, or "" (the decorator then names the cache after its source)."""
        self.key_fn = key
        self.key_namespace = key_namespace
        """Names the cached function in keys instead of its identity (``_identity``)."""
        self.tenant_required = bool(tenant_required)
        self._ttl_ms = max(1, int(self.ttl * 1000))

    def entry_ttl_ms(self) -> int:
        """An entry's TTL: ``ttl`` with up to ``jitter`` of it taken off at random, so entries
        written together do not expire together."""
        if not self.jitter:
            return self._ttl_ms
        return max(1, int(self._ttl_ms * (1.0 - self.jitter * random.random())))


def _check_positive(field: str, value: float) -> None:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not (math.isfinite(value) and value > 0)
    ):
        raise ConfigError(field, value, "must be a positive number of seconds")

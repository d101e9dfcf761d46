"""A bounded memo: a dict that never grows past a size limit.

Two policies, chosen by the method a memo is filled with:

- ``remember``: past the limit a new key is answered but not remembered.  For per-class caches
  (readers, stream handlers, kinds), keyed by types a host may create on the fly: the common
  classes, seen first, stay cached.
- ``keep``: a full memo forgets everything, then keeps the new key.  For entries that go stale
  or are only worth having while they are recent (generations read, key prefixes, prices by
  identity): the newest are the ones worth keeping.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")

DEFAULT_LIMIT = 512


class BoundedMemo(dict[K, V]):
    """A ``dict`` whose :meth:`remember` keeps at most ``limit`` entries."""

    __slots__ = ("limit",)

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        super().__init__()
        self.limit = limit

    def remember(self, key: K, value: V) -> V:
        """Keep ``value`` for ``key`` while there is room; returns ``value`` either way."""
        if len(self) < self.limit:
            self[key] = value
        return value

    def keep(self, key: K, value: V) -> V:
        """Keep ``value`` for ``key``, forgetting everything else first when the memo is full;
        returns ``value``."""
        if len(self) >= self.limit and key not in self:
            self.clear()
        self[key] = value
        return value

"""A bounded memo: a dict that stops remembering past a size limit.

Per-class caches (readers, stream handlers, kinds) are keyed by types that a host may create on
the fly; past the limit a new key is answered but not remembered, so memory stays bounded and
the common classes, seen first, stay cached.
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

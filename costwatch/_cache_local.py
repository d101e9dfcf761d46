"""The retrieval cache's optional in-process LRU in front of the backend (``local_size`` > 0)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from decimal import Decimal

LocalKey = Hashable
"""The call's canonical JSON, or for calls of plain str/int arguments a cheaper exact tuple."""

EXACT_KEYABLE: frozenset[type] = frozenset({str, int})
"""Argument types whose tuple equality is exactly JSON equality (not bool/float: 1 == True)."""


class LocalLRU:
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

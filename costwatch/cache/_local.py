"""The retrieval cache's optional in-process LRU in front of the backend (``local_size`` > 0)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from decimal import Decimal
from typing import Any, NamedTuple

import orjson

from costwatch._core.forks import new_lock
from costwatch.cache._copy import Copier, copier

LocalKey = Hashable
"""The call's canonical JSON, or for calls of plain str/int arguments a cheaper exact tuple."""

EXACT_KEYABLE: frozenset[type] = frozenset({str, int})
"""Argument types whose tuple equality is exactly JSON equality (not bool/float: 1 == True)."""


class LocalEntry(NamedTuple):
    """One value in the LRU: ``copy(value)`` is a fresh copy of it for each hit."""

    expires: float
    value: Any
    """A private decoded copy that nobody mutates (or, nested too deep, the JSON itself)."""
    copy: Copier
    cost: Decimal


class LocalLRU:
    """A small in-process LRU of decoded values with its own short TTL (thread-safe).

    Every hit gets a fresh copy (new lists and dicts, see ``_copy``), so a host that
    mutates what it got back cannot change what the next caller gets.  Reads take no lock
    (each OrderedDict operation is atomic under the GIL); writes and evictions do.
    """

    __slots__ = ("_data", "_lock", "_size", "_ttl", "_clock")

    def __init__(self, size: int, ttl_s: float, clock: Callable[[], float]) -> None:
        self._data: OrderedDict[LocalKey, LocalEntry] = OrderedDict()
        self._lock = new_lock()
        self._size = size
        self._ttl = ttl_s
        self._clock = clock

    def get(self, key: LocalKey) -> LocalEntry | None:
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
        """Keep the value whose JSON is ``body`` (decoded here: the LRU's copy is its own)."""
        value = orjson.loads(body)
        copy = copier(value)
        if copy is None:
            value, copy = body, orjson.loads
        entry = LocalEntry(self._clock() + self._ttl, value, copy, cost)
        with self._lock:
            self._data[key] = entry
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

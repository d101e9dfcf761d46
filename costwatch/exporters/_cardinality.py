"""Series objects by guarded label values: ``GuardedTable``.

The guard itself (``LabelGuard``: clean values, cap distinct ones) lives in ``_core.labels``,
below the in-process totals, which key their rows by guarded values too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from costwatch._core.forks import new_lock
from costwatch._core.labels import LabelGuard

V = TypeVar("V")


class GuardedTable(Generic[V]):
    """Series objects by label values, behind the guard, with a cache of raw label tuples.

    ``get(raw)`` is one dict lookup when ``raw`` was admitted unchanged.  A tuple that had a value
    replaced by ``other`` is not cached (that would grow without bound): it goes through the
    guard each time, which also counts each replacement.
    """

    def __init__(
        self, names: tuple[str, ...], guard: LabelGuard, factory: Callable[[tuple[str, ...]], V]
    ) -> None:
        self.names = names
        self._guard = guard
        self._factory = factory
        self._lock = new_lock()
        self._by_raw: dict[tuple[str, ...], V] = {}
        self._by_labels: dict[tuple[str, ...], V] = {}
        self.cached = self._by_raw.get
        """The series of a raw label tuple admitted unchanged, else ``None`` (hot-path lookup)."""

    def get(self, raw: tuple[str, ...], weight: int = 1) -> V:
        """The series of ``raw``; ``weight`` is how many calls a replacement stands for."""
        series = self._by_raw.get(raw)
        if series is None:
            series = self._resolve(raw, weight)
        return series

    def _resolve(self, raw: tuple[str, ...], weight: int) -> V:
        labels = self._guard.guard(self.names, raw, weight)
        with self._lock:
            series = self._by_labels.get(labels)
            if series is None:
                series = self._by_labels[labels] = self._factory(labels)
            if labels is raw:
                self._by_raw[raw] = series
        return series

    def items(self) -> list[tuple[tuple[str, ...], V]]:
        """A snapshot of (label values, series), safe to iterate while others record."""
        with self._lock:
            return list(self._by_labels.items())

    def __len__(self) -> int:
        return len(self._by_labels)

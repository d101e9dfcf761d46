"""The label guard: caps the distinct values a free-form label (tenant, feature, model ...) takes.

A metrics backend pays for every distinct label combination.  Tenant ids and feature names come
from the host application, so one bug (a request id passed as the tenant) could create millions
of series.  Past its limit a label's new values are exported as ``other`` and every replacement
is counted, so the overflow is visible (``costwatch_label_overflow_total{label}``).

The guard keeps the first ``limit`` distinct values it sees per label, for the life of the
process.  Under prometheus-client multiprocess mode each worker has its own guard, so a label
exposes at most ``workers * limit`` values plus ``other``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

from costwatch._core.errors import ConfigError
from costwatch.exporters.names import OTHER

DEFAULT_LABEL_LIMITS: Mapping[str, int] = {
    "tenant": 100,
    "feature": 100,
    "team": 100,
    "pipeline": 100,
    "source": 100,
    "cache": 100,
    "model": 200,
    "budget": 200,
}
"""Applied to every label the caller does not set a limit for."""


def merged_limits(label_limits: Mapping[str, int] | None) -> dict[str, int]:
    """``label_limits`` over the defaults; raises ConfigError for a limit below 1."""
    limits = dict(DEFAULT_LABEL_LIMITS)
    for label, limit in (label_limits or {}).items():
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError("label_limits", {label: limit}, "each limit must be an integer >= 1")
        limits[label] = limit
    return limits


class LabelGuard:
    """Admits the first ``limit`` distinct values of each limited label; later ones are ``other``.

    ``admit`` is lock-free for a value already admitted; the lock is taken only to admit a new
    value or to count an overflow.  The empty value (label not set) and ``other`` itself never use
    up a slot.
    """

    def __init__(
        self,
        label_limits: Mapping[str, int] | None = None,
        on_overflow: Callable[[str], None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._limits: dict[str, int] = merged_limits(label_limits)
        self._seen: dict[str, set[str]] = {label: set() for label in self._limits}
        self._overflow: dict[str, int] = {}
        self.on_overflow = on_overflow
        """Called with the label name after each replacement (the multiprocess path counts it)."""

    @property
    def limits(self) -> Mapping[str, int]:
        return self._limits

    def set_limits(self, label_limits: Mapping[str, int] | None) -> None:
        """New limits; values already admitted stay admitted."""
        limits = merged_limits(label_limits)
        with self._lock:
            self._limits = limits
            for label in limits:
                self._seen.setdefault(label, set())

    def admit(self, label: str, value: str, weight: int = 1) -> str:
        """``value`` if the label may take it, else ``other``, and the replacement counted
        ``weight`` times (once per call it stands for)."""
        seen = self._seen.get(label)
        if seen is None or value in seen or value == "" or value == OTHER:
            return value
        with self._lock:
            if value in seen:
                return value
            limit = self._limits.get(label)
            if limit is None or len(seen) < limit:
                seen.add(value)
                return value
            self._overflow[label] = self._overflow.get(label, 0) + weight
        callback = self.on_overflow
        if callback is not None:
            callback(label)
        return OTHER

    def guard(
        self, names: tuple[str, ...], values: tuple[str, ...], weight: int = 1
    ) -> tuple[str, ...]:
        """``values`` (labelled by ``names``) with every limited label passed through ``admit``."""
        out = list(values)
        changed = False
        for i, name in enumerate(names):
            if name in self._seen:
                admitted = self.admit(name, out[i], weight)
                if admitted is not out[i]:
                    out[i] = admitted
                    changed = True
        return tuple(out) if changed else values

    def overflow_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._overflow)

    def distinct(self, label: str) -> int:
        """How many values of ``label`` have been admitted."""
        return len(self._seen.get(label, ()))


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
        self._lock = threading.Lock()
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

"""Totals of the common call and of cache lookups, kept per thread without a lock.

Most wrapped calls are alike: they succeeded, reported their usage, and ran outside any
``costwatch.request``, budget or cache scope.  The ledger behind ``summary()`` and the
single-process Prometheus exporter only need totals of such calls, so the recorder adds the
call's tokens and latency to a ``Tally`` instead of building, pricing and fanning out a
``CostRecord`` to them (other sinks, if any, still get one).  Pricing waits until the totals
are read: a price is linear in tokens (tiers are kept apart in the key), so pricing a sum of
tokens gives exactly the sum of the per-call prices, in ``Decimal``.

Each thread adds to its own table, so a table has a single writer and the call path takes no
lock.  Readers copy each row (one C-level list copy, atomic under the GIL); a row read while its
writer is between two additions is only momentarily behind, never lost.  Each consumer reads
through its own ``TallyCursor``, which hands out what was added since its last read.  Tables are
kept by thread identifier, which CPython reuses as threads end, so a thread that starts takes
over the table of one that finished.

Cache lookups are counted the same way, for the same readers, by ``CacheEvent`` with its amount
saved set to zero (a value: cache, result and attribution; the amounts are summed in the row, so
entries of many different costs share it): a hit adds to a row instead of taking two locks.
"""

from __future__ import annotations

import threading
from _thread import get_ident
from bisect import bisect_left
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from costwatch._context import ATTRIBUTION_TAGS, resolve_strategy
from costwatch._failopen import errors
from costwatch._record import TokenUsage
from costwatch._sink import CacheEvent

if TYPE_CHECKING:
    from costwatch._pricing import PriceCatalog
    from costwatch._usage import Tokens

TallyKey = tuple[str, str, str, tuple[str, ...], int]
"""``(provider, stage, model, attribution tags in force, price tier index)``: values, never
objects, so call sites made on the fly (a function decorated per request) share totals."""

K = TypeVar("K")

_ZERO = Decimal(0)

_CALLS, _LATENCY, _BUCKETS = 0, 11, 12
"""Row layout: calls, the six token counts (1-6), the four ``Extras`` counts (7-10), latency
sum, duration bucket counts."""


@dataclass(slots=True)
class TalliedCalls:
    """Calls that share a key, added since a cursor last read, priced and attributed."""

    provider: str
    model: str
    stage: str
    strategy: str
    tags: dict[str, str]
    usage: TokenUsage
    calls: int
    cost_usd: Decimal | None
    """``None`` when the model has no price (the calls count as unpriced)."""
    input_cost_usd: Decimal | None
    latency_s: float
    buckets: list[int]
    """Calls per duration bucket (``Tally.bounds`` plus +Inf); empty when not kept."""


class Tally:
    """Per-thread running totals of successful calls by ``TallyKey``."""

    def __init__(
        self, catalog: PriceCatalog, bounds: tuple[float, ...] | None = None
    ) -> None:
        self.catalog = catalog
        self.bounds = bounds
        """Duration bucket bounds, when a consumer exports a latency histogram."""
        self._width = _BUCKETS + (len(bounds) + 1 if bounds is not None else 0)
        self._tables: dict[int, dict[TallyKey, list[Any]]] = {}
        self._cache_tables: dict[int, dict[CacheEvent, list[Any]]] = {}
        self._lock = threading.Lock()

    def add(self, key: TallyKey, tokens: Tokens, latency_s: float) -> None:
        """Count one call (the call path: no lock, no allocation once the row exists)."""
        table = self._tables.get(get_ident())
        if table is None:
            table = self._new_table(self._tables)
        row = table.get(key)
        if row is None:
            row = table[key] = self._new_row()
        fresh, cache_read, cache_write, output, reasoning, cache_write_1h, extras = tokens
        row[0] += 1
        row[1] += fresh
        if cache_read:
            row[2] += cache_read
        if cache_write:
            row[3] += cache_write
            row[6] += cache_write_1h
        row[4] += output
        if reasoning:
            row[5] += reasoning
        if extras is not None:
            row[7] += extras[0]
            row[8] += extras[1]
            row[9] += extras[2]
            row[10] += extras[3]
        row[11] += latency_s
        bounds = self.bounds
        if bounds is not None:
            row[12 + bisect_left(bounds, latency_s)] += 1

    def add_cache(self, key: CacheEvent, saved_usd: Decimal) -> None:
        """Count one cache lookup: ``key`` is its event with ``saved_usd`` zero (see
        :func:`cache_key`); the lookup path takes no lock and allocates nothing once the row
        exists."""
        table = self._cache_tables.get(get_ident())
        if table is None:
            table = self._new_table(self._cache_tables)
        row = table.get(key)
        if row is None:
            row = table[key] = [0, _ZERO]
        row[0] += 1
        if saved_usd:
            row[1] += saved_usd

    def _new_table(self, tables: dict[int, dict[K, list[Any]]]) -> dict[K, list[Any]]:
        with self._lock:
            return tables.setdefault(get_ident(), {})

    def _new_row(self) -> list[Any]:
        row: list[Any] = [0] * self._width
        row[_LATENCY] = 0.0
        return row

    def totals(self) -> dict[TallyKey, list[Any]]:
        """Every key's row, summed over the threads' tables (a snapshot)."""
        return self._summed(self._tables)

    def cache_totals(self) -> dict[CacheEvent, list[Any]]:
        """``[lookups, amount saved]`` by key, summed over the threads' tables (a snapshot)."""
        return self._summed(self._cache_tables)

    def _summed(self, by_thread: dict[int, dict[K, list[Any]]]) -> dict[K, list[Any]]:
        with self._lock:
            tables = list(by_thread.values())
        out: dict[K, list[Any]] = {}
        for table in tables:
            for key, row in list(table.items()):
                snapshot = row[:]
                acc = out.get(key)
                if acc is None:
                    out[key] = snapshot
                else:
                    for i, value in enumerate(snapshot):
                        acc[i] += value
        return out

    def cursor(self) -> TallyCursor:
        return TallyCursor(self)


class TallyCursor:
    """One consumer's view of a ``Tally``: each ``take()`` returns what was added since the last."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self._seen: dict[TallyKey, list[Any]] = {}
        self._seen_cache: dict[CacheEvent, list[Any]] = {}
        self._lock = threading.Lock()

    def take(self) -> list[TalliedCalls]:
        """What was added since the last ``take()``, priced; a key that fails to price is
        reported (raised in strict mode) and offered again next time."""
        with self._lock:
            out: list[TalliedCalls] = []
            for key, row in self.tally.totals().items():
                seen = self._seen.get(key)
                if seen is None:
                    delta = row
                elif row == seen:  # the whole row: a copy may catch a call half-added
                    continue
                else:
                    delta = [now - before for now, before in zip(row, seen, strict=True)]
                try:
                    out.append(_priced(self.tally.catalog, key, delta))
                except Exception as exc:
                    errors.report("tally", exc)
                    continue
                self._seen[key] = row
            return out

    def take_cache(self) -> list[tuple[CacheEvent, int]]:
        """Cache lookups counted since the last ``take_cache()``: ``(event, lookups)``, the
        event's ``saved_usd`` being what those lookups saved together."""
        with self._lock:
            out: list[tuple[CacheEvent, int]] = []
            for key, row in self.tally.cache_totals().items():
                count, saved = row
                seen = self._seen_cache.get(key)
                if seen is not None:
                    if row == seen:
                        continue
                    count, saved = count - seen[0], saved - seen[1]
                out.append((key._replace(saved_usd=saved), count))
                self._seen_cache[key] = row
            return out


def cache_key(event: CacheEvent) -> CacheEvent:
    """The tally row of a lookup: its event without the amount saved."""
    return event._replace(saved_usd=_ZERO) if event.saved_usd else event


def _priced(catalog: PriceCatalog, key: TallyKey, row: list[Any]) -> TalliedCalls:
    provider, stage, model, attribution, tier = key
    calls = row[_CALLS]
    usage = TokenUsage(*row[1:_LATENCY])
    price = catalog.resolve(provider, model)
    cost: Decimal | None = None
    input_cost: Decimal | None = None
    if price is None:
        fine_tuned = catalog.is_fine_tuned(model)
    else:
        fine_tuned = price.fine_tuned
        if tier:
            price = price.tiers[tier - 1].price
        cost, input_cost = price.cost_split(usage, calls)
    tags = {name: value for name, value in zip(ATTRIBUTION_TAGS, attribution, strict=True) if value}
    return TalliedCalls(
        provider,
        model,
        stage,
        resolve_strategy(fine_tuned, None, tags),
        tags,
        usage,
        calls,
        cost,
        input_cost,
        row[_LATENCY],
        row[_BUCKETS:],
    )


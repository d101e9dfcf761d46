"""Totals of the common call and of cache lookups, kept without a lock on the call path.

Most wrapped calls are alike: they succeeded, reported their usage, and ran outside any
budget or cache scope (inside a ``costwatch.request`` or not: a request's calls are kept apart
by its name, and the request keeps its own running cost).  The ledger behind ``summary()`` and
the single-process Prometheus exporter only need totals of such calls, so the recorder adds the
call's tokens and latency to a ``Tally`` instead of building, pricing and fanning out a
``CostRecord`` to them (other sinks, if any, still get one).  Pricing waits until the totals
are read: a price is linear in tokens (tiers are kept apart in the key), so pricing a sum of
tokens gives exactly the sum of the per-call prices, in ``Decimal``.

A call is one ``extend`` of its tokens and latency onto its key's entry, from whichever
thread made it: the call path takes no lock.  Every 64 calls an entry's calls are folded into
its row with C-level sums, which costs a fraction of adding each call's counts to the row one
by one; folds are serialised by a lock.  Readers copy each entry (one C-level list copy, atomic
under the GIL) and fold the copy, so every call is read exactly once.  Each consumer reads
through its own ``TallyCursor``, which hands out what was added since its last read.

Cache lookups are counted for the same readers, by ``CacheEvent`` with its amount saved set to
zero (a value: cache, result and attribution; the amounts are summed in the row, so entries of
many different costs share it), in rows kept per thread so that each has a single writer: a
hit adds to a row instead of taking two locks.  Tables are kept by thread identifier, which
CPython reuses as threads end, so a thread that starts takes over the table of one that
finished.

Keys hold guarded label values (``_core.labels``): past a label's limit its values share the
``other`` row, so the tally is bounded by the label limits whatever the tags.  A call whose
model or provider is past its limit is not tallied (its price is looked up by the key's model
when read): the recorder prices it on its own.
"""

from __future__ import annotations

from _thread import get_ident
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any

from costwatch._core.context import ATTRIBUTION_TAGS, resolve_strategy
from costwatch._core.failopen import errors
from costwatch._core.forks import new_lock
from costwatch._core.labels import LabelGuard
from costwatch._core.record import ZERO, TokenUsage
from costwatch._core.sink import CacheEvent

if TYPE_CHECKING:
    from costwatch.pricing import PriceCatalog

TallyKey = tuple[str, str, str, tuple[str, ...], int, str]
"""``(provider, stage, model, attribution tags in force, price tier index, pipeline)``: values,
never objects, so call sites made on the fly (a function decorated per request) share totals.
``pipeline`` is the name of the ``costwatch.request`` the calls ran in ("" outside one); the
attribution's strategy is then the one the calls resolved to in their request."""


_CALLS, _LATENCY, _BUCKETS = 0, 11, 12
"""Row layout: calls, the six token counts (1-6), the four ``Extras`` counts (7-10), latency
sum, duration bucket counts."""

_STRIDE = 8
"""A call in an entry: its seven ``Tokens`` values, then its latency."""
ENTRY_LIMIT = 1 + _STRIDE * 64
"""An entry's calls are folded into its row every 64 calls: often enough to keep an entry
small (a few KB), seldom enough that folding costs little per call."""


@dataclass(slots=True)
class TalliedCalls:
    """Calls that share a key, added since a cursor last read, priced and attributed."""

    provider: str
    model: str
    stage: str
    strategy: str
    feature: str
    team: str
    tenant: str
    """The attribution tags the calls ran under ("" where unset), as a ``CostRecord`` has them."""
    usage: TokenUsage
    calls: int
    cost_usd: Decimal | None
    """``None`` when the model has no price (the calls count as unpriced)."""
    input_cost_usd: Decimal | None
    latency_s: float
    buckets: list[int]
    """Calls per duration bucket (``Tally.bounds`` plus +Inf); empty when not kept."""
    pipeline: str = ""
    """The ``costwatch.request`` the calls ran in ("" outside one)."""


class Tally:
    """Running totals of successful calls by ``TallyKey``, and of cache lookups."""

    def __init__(
        self,
        catalog: PriceCatalog,
        bounds: tuple[float, ...] | None = None,
        labels: LabelGuard | None = None,
    ) -> None:
        self.catalog = catalog
        self.bounds = bounds
        """Duration bucket bounds, when a consumer exports a latency histogram."""
        self.labels = labels if labels is not None else LabelGuard()
        """The guard every key's label values pass (shared with the readers' exporter)."""
        self._width = _BUCKETS + (len(bounds) + 1 if bounds is not None else 0)
        self._entries: dict[TallyKey, list[Any]] = {}
        self._fold_lock = new_lock()
        self._cache_tables: dict[int, dict[CacheEvent, list[Any]]] = {}
        self._lock = new_lock()

    def entry(self, key: TallyKey) -> list[Any]:
        """The entry for ``key``: its row, then the calls added since the row was last folded,
        each as its seven ``Tokens`` followed by its latency (a flat list, which folds fastest).

        A writer adds a call in one atomic ``extend`` of those eight values, from any thread,
        and calls :meth:`fold` once the entry is longer than ``ENTRY_LIMIT``; the entry itself
        stays the same list, so a call site may keep it (see ``CallSpec.record_usage``).
        """
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries.setdefault(key, [self._new_row()])
        return entry

    def guarded_entry(
        self,
        provider: str,
        stage: str,
        model: str,
        attribution: tuple[str, ...],
        tier: int,
        pipeline: str = "",
    ) -> list[Any] | None:
        """The entry of a call, its label values guarded; ``None`` when ``provider`` or
        ``model`` is not admitted as it is (past its limit, or repaired): such a call is priced
        on its own, since the tally prices a key by its model."""
        labels = self.labels
        admit = labels.admit
        if admit("provider", provider) is not provider or admit("model", model) is not model:
            return None
        if pipeline:
            pipeline = admit("pipeline", pipeline)
        attribution = labels.guard(ATTRIBUTION_TAGS, attribution)
        return self.entry((provider, stage, model, attribution, tier, pipeline))

    def fold(self, entry: list[Any]) -> None:
        """Fold the calls an entry holds into its row.

        Folds are serialised; appends are not, and land after the calls being folded, which
        one C-level slice store then replaces with the new row.  A reader copying the entry
        (one ``entry[:]``, atomic under the GIL) gets every call once, before or after.
        """
        with self._fold_lock:
            held = entry[:]
            entry[: len(held)] = [self._folded(held)]

    def add_cache(self, key: CacheEvent, saved_usd: Decimal) -> None:
        """Count one cache lookup: ``key`` is its event with ``saved_usd`` zero (see
        :func:`cache_key`); the lookup path takes no lock and allocates nothing once the row
        exists."""
        table = self._cache_tables.get(get_ident())
        if table is None:
            with self._lock:
                table = self._cache_tables.setdefault(get_ident(), {})
        row = table.get(key)
        if row is None:
            row = self._cache_row(table, key)
        row[0] += 1
        if saved_usd:
            row[1] += saved_usd

    def _cache_row(self, table: dict[CacheEvent, list[Any]], key: CacheEvent) -> list[Any]:
        """The row of a lookup not counted in ``table`` yet: that of its guarded values (the
        raw key is kept only when the guard left it as it was, so the table stays bounded)."""
        admit = self.labels.admit
        guarded = key._replace(
            cache=admit("cache", key.cache),
            feature=admit("feature", key.feature),
            team=admit("team", key.team),
            tenant=admit("tenant", key.tenant),
        )
        if guarded == key:
            row: list[Any] = [0, ZERO]
            table[key] = row
            return row
        return table.setdefault(guarded, [0, ZERO])

    def _new_row(self) -> list[Any]:
        row: list[Any] = [0] * self._width
        row[_LATENCY] = 0.0
        return row

    def _folded(self, entry: list[Any]) -> list[Any]:
        """A new row: ``entry``'s row (never changed: a reader may hold it) plus its calls.

        Each count is one strided slice of the flat entry, summed in C: a fraction of the cost
        of adding each call's counts to the row as it comes.
        """
        row: list[Any] = entry[0][:]
        calls = (len(entry) - 1) // _STRIDE
        if not calls:
            return row
        end = 1 + _STRIDE * calls
        row[_CALLS] += calls
        for i in range(1, 7):
            row[i] += sum(entry[i:end:_STRIDE])
        extras = list(filter(None, entry[7:end:_STRIDE]))
        if extras:
            counts = list(zip(*extras, strict=True))  # the four counts, then the service tier
            for i in range(4):
                row[7 + i] += sum(counts[i])
        latencies = entry[_STRIDE:end:_STRIDE]
        row[_LATENCY] += sum(latencies)
        bounds = self.bounds
        if bounds is not None:
            for index, count in Counter(map(partial(bisect_left, bounds), latencies)).items():
                row[_BUCKETS + index] += count
        return row

    def totals(self) -> dict[TallyKey, list[Any]]:
        """Every key's row with the calls not yet folded into it (a snapshot)."""
        return {key: self._folded(entry[:]) for key, entry in list(self._entries.items())}

    def cache_totals(self) -> dict[CacheEvent, list[Any]]:
        """``[lookups, amount saved]`` by key, summed over the threads' tables (a snapshot)."""
        with self._lock:
            tables = list(self._cache_tables.values())
        out: dict[CacheEvent, list[Any]] = {}
        for table in tables:
            for key, row in list(table.items()):
                snapshot = row[:]
                acc = out.get(key)
                if acc is None:
                    out[key] = snapshot
                else:
                    acc[0] += snapshot[0]
                    acc[1] += snapshot[1]
        return out

    def cursor(self) -> TallyCursor:
        return TallyCursor(self)


class TallyCursor:
    """One consumer's view of a ``Tally``: each ``take()`` returns what was added since the last."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self._seen: dict[TallyKey, list[Any]] = {}
        self._seen_cache: dict[CacheEvent, list[Any]] = {}
        self._lock = new_lock()

    def take(self) -> list[TalliedCalls]:
        """What was added since the last ``take()``, priced; a key that fails to price is
        reported (raised in strict mode) and offered again next time."""
        with self._lock:
            out: list[TalliedCalls] = []
            for key, row in self.tally.totals().items():
                seen = self._seen.get(key)
                if seen is None:
                    if not row[_CALLS]:  # an entry made for a call not appended yet
                        continue
                    delta = row
                elif row == seen:
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
    return event._replace(saved_usd=ZERO) if event.saved_usd else event


def _priced(catalog: PriceCatalog, key: TallyKey, row: list[Any]) -> TalliedCalls:
    provider, stage, model, attribution, tier, pipeline = key
    calls = row[_CALLS]
    usage = TokenUsage(*row[1:_LATENCY])
    price = catalog.resolve(provider, model)
    cost: Decimal | None = None
    input_cost: Decimal | None = None
    if price is None:
        fine_tuned = catalog.is_fine_tuned(model)
    else:
        fine_tuned = price.fine_tuned
        cost, input_cost = price.of_tier(tier).cost_split(usage, calls)
    tags = {name: value for name, value in zip(ATTRIBUTION_TAGS, attribution, strict=True) if value}
    return TalliedCalls(
        provider,
        model,
        stage,
        resolve_strategy(fine_tuned, None, tags),
        tags.get("feature", ""),
        tags.get("team", ""),
        tags.get("tenant", ""),
        usage,
        calls,
        cost,
        input_cost,
        row[_LATENCY],
        row[_BUCKETS:],
        pipeline,
    )

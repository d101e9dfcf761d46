"""Cumulative in-process totals behind the exporters' collection-time reporting.

Recording a call adds to a few integers and one ``Decimal`` under the lock of its series;
turning totals into Prometheus samples or OpenTelemetry observations happens only when a scrape
or a metric reader asks.  Calls the recorder only tallied (``_tally``) are taken in, priced, by
``sync()`` before a collection.  Money stays ``Decimal`` here and becomes ``float`` at the edge.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from decimal import Decimal
from operator import attrgetter

from costwatch._core.forks import new_lock
from costwatch._core.labels import LabelGuard
from costwatch._core.record import ZERO, CostRecord, TokenUsage
from costwatch._core.sink import CacheEvent, FixedCost, LifecycleCost, Outcome, RequestEnd
from costwatch.accounting._components import split
from costwatch.accounting._tally import TalliedCalls, Tally, TallyCursor
from costwatch.exporters._cardinality import GuardedTable
from costwatch.exporters.names import (
    CACHE_LABELS,
    DURATION_BUCKETS,
    OUTCOME_LABELS,
    REQUEST_COST_BUCKETS,
    REQUEST_LABELS,
    SPEND_LABELS,
)

spend_values = attrgetter(*SPEND_LABELS[1:])
"""The ``SPEND_LABELS`` values after ``service`` of a ``CostRecord`` or of ``TalliedCalls``."""
request_values = attrgetter(*REQUEST_LABELS[1:])
"""The ``REQUEST_LABELS`` values after ``service`` of a ``RequestEnd`` (or an ``Outcome``)."""
_outcome_values = attrgetter(*OUTCOME_LABELS[1:])
"""The ``OUTCOME_LABELS`` values after ``service`` of an ``Outcome``."""


class SpendSeries:
    """Totals of one spend label combination (service, provider, model, stage, strategy, ...)."""

    __slots__ = (
        "buckets",
        "context",
        "cost",
        "dur_sum",
        "error",
        "labels",
        "lock",
        "ok",
        "tokens",
        "unpriced",
    )

    def __init__(self, labels: tuple[str, ...], histogram: bool) -> None:
        self.labels = labels
        """The exported label values (after the guard), in ``SPEND_LABELS`` order."""
        self.lock = new_lock()
        self.cost: Decimal | None = None
        """``None`` until a priced call arrives: an unpriced model exposes no cost series."""
        self.unpriced = 0
        self.tokens = [0, 0, 0, 0, 0]
        """In ``TOKEN_TYPE_VALUES`` order: input, cache_read, cache_write, output, reasoning."""
        self.ok = 0
        self.error = 0
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1) if histogram else []
        """Non-cumulative counts per duration bucket, the last one is +Inf."""
        self.dur_sum = 0.0
        self.context: dict[str, list[int | Decimal]] = {}
        """Retrieval source → [context tokens, context cost]."""

    def add_spend(self, cost: Decimal | None, calls: int, usage: TokenUsage) -> None:
        """Cost (or ``calls`` unpriced calls) and tokens; the caller holds ``lock``."""
        if cost is None:
            self.unpriced += calls
        elif self.cost is None:
            self.cost = cost
        else:
            self.cost += cost
        tokens = self.tokens
        tokens[0] += usage.input
        tokens[1] += usage.cache_read
        tokens[2] += usage.cache_write
        tokens[3] += usage.output
        tokens[4] += usage.reasoning


class HistogramSeries:
    """A histogram kept as non-cumulative bucket counts and a sum."""

    __slots__ = ("buckets", "labels", "lock", "total")

    def __init__(self, labels: tuple[str, ...], n_bounds: int) -> None:
        self.labels = labels
        self.lock = new_lock()
        self.buckets = [0] * (n_bounds + 1)
        self.total = 0.0

    def observe(self, bounds: tuple[float, ...], value: float) -> None:
        with self.lock:
            self.buckets[bisect_left(bounds, value)] += 1
            self.total += value


class CacheSeries:
    __slots__ = ("lock", "results", "saved")

    def __init__(self) -> None:
        self.lock = new_lock()
        self.results: dict[str, int] = {}
        self.saved = ZERO


def lifecycle_labels(
    event: LifecycleCost | FixedCost, service: str, guard: LabelGuard
) -> tuple[str, ...]:
    """The ``LIFECYCLE_LABELS`` values of a lifecycle event (free-form ones guarded)."""
    admit = guard.admit
    return (
        event.service or service,
        event.kind,
        event.name,
        event.strategy,
        admit("pipeline", event.pipeline) if event.pipeline else "",
        admit("feature", event.feature) if event.feature else "",
        admit("team", event.team) if event.team else "",
        admit("tenant", event.tenant) if event.tenant else "",
    )


def pipeline_call(
    record: CostRecord, model: str, service: str, guard: LabelGuard
) -> tuple[tuple[str, ...], list[tuple[str, Decimal | None, int]]]:
    """``(PIPELINE_LABELS values but the component, [(component, dollars, tokens)])`` of a call
    inside a request; ``model`` is its (guarded) model label."""
    parts = split(
        record.stage,
        record.cost_usd,
        record.input_cost_usd,
        record.usage.by_type(),
        sum(record.context_tokens.values()) if record.context_tokens else 0,
        sum(record.context_cost_usd.values(), ZERO),
    )
    head = (
        record.service or service,
        guard.admit("pipeline", record.pipeline),
        record.strategy,
        record.provider,
        model,
    )
    return head, parts


class OutcomeSeries:
    """Requests and their cost by outcome, for one request label combination."""

    __slots__ = ("by_outcome", "lock")

    def __init__(self) -> None:
        self.lock = new_lock()
        self.by_outcome: dict[str, list[int | Decimal]] = {}


class SpendAggregate:
    """Everything one exporter reports, aggregated in process.

    ``histograms=False`` skips the duration and request-cost buckets (the OTel exporter records
    those through SDK histograms instead).
    """

    def __init__(self, service: str, guard: LabelGuard, *, histograms: bool = True) -> None:
        self.service = service
        self.guard = guard
        self.histograms = histograms
        self.spend: GuardedTable[SpendSeries] = GuardedTable(
            SPEND_LABELS, guard, lambda labels: SpendSeries(labels, histograms)
        )
        self.requests: GuardedTable[HistogramSeries] = GuardedTable(
            REQUEST_LABELS, guard, lambda labels: HistogramSeries(labels, len(REQUEST_COST_BUCKETS))
        )
        self.cache: GuardedTable[CacheSeries] = GuardedTable(
            CACHE_LABELS, guard, lambda _labels: CacheSeries()
        )
        self._spend_cached = self.spend.cached
        self._lock = new_lock()
        self.budget_spent: dict[str, float] = {}
        self.budget_limit: dict[str, float] = {}
        self.budget_blocked: dict[str, int] = {}
        self.budget_state_lost: dict[str, int] = {}
        self.internal_errors: dict[str, int] = {}
        self.outcomes: GuardedTable[OutcomeSeries] = GuardedTable(
            OUTCOME_LABELS, guard, lambda _labels: OutcomeSeries()
        )
        self.unmatched: dict[str, int] = {}
        self.lifecycle: dict[tuple[str, ...], Decimal] = {}
        """One-off lifecycle costs by ``LIFECYCLE_LABELS`` values."""
        self.fixed: dict[tuple[str, ...], float] = {}
        """Declared fixed costs' dollars per hour by ``LIFECYCLE_LABELS`` values."""
        self._fixed_keys: dict[str, tuple[str, ...]] = {}
        self.pipeline_calls: dict[tuple[str, ...], list[Decimal | int]] = {}
        """``PIPELINE_LABELS`` values -> [dollars, tokens] of calls inside requests."""
        self._tallies: dict[Tally, TallyCursor] = {}

    # -- tallied calls -------------------------------------------------------------------------

    def attach(self, tally: Tally) -> None:
        """Also export the calls the recorder only tallied (read at each ``sync()``)."""
        with self._lock:
            self._tallies.setdefault(tally, tally.cursor())

    def detach(self, tally: Tally) -> None:
        """Take in what ``tally`` still holds and stop reading it (its runtime was replaced)."""
        with self._lock:
            cursor = self._tallies.pop(tally, None)
        if cursor is not None:
            self._take(cursor)

    def sync(self) -> None:
        """Bring the series up to date with every attached tally (before a collection)."""
        with self._lock:
            cursors = list(self._tallies.values())
        for cursor in cursors:
            self._take(cursor)

    def _take(self, cursor: TallyCursor) -> None:
        for calls in cursor.take():
            self.add_tallied(calls)
        for event, count in cursor.take_cache():
            self.on_cache(event, count)

    def add_tallied(self, calls: TalliedCalls) -> None:
        series = self.spend.get((self.service, *spend_values(calls)), calls.calls)
        with series.lock:
            series.add_spend(calls.cost_usd, calls.calls, calls.usage)
            series.ok += calls.calls
            if series.buckets and calls.buckets:
                for i, count in enumerate(calls.buckets):
                    series.buckets[i] += count
                series.dur_sum += calls.latency_s
        if calls.pipeline:  # calls inside requests (none of them had retrieved context)
            head = (self.service, calls.pipeline, calls.strategy, calls.provider, calls.model)
            usage = calls.usage.by_type()
            self._add_pipeline_parts(
                head, split(calls.stage, calls.cost_usd, calls.input_cost_usd, usage, 0, ZERO)
            )

    # -- records and events --------------------------------------------------------------------

    def on_record(self, record: CostRecord) -> None:
        self.add_record(record)

    def add_record(self, record: CostRecord) -> SpendSeries:
        """Add ``record`` to its spend series and return the series (the OTel exporter reads
        its admitted labels)."""
        key = (record.service or self.service, *spend_values(record))
        series = self._spend_cached(key)
        if series is None:
            series = self.spend.get(key)
        usage = record.usage
        cost = record.cost_usd
        latency = record.latency_s
        # Everything that can fail on a malformed record fails before the series changes.
        bucket = bisect_left(DURATION_BUCKETS, latency) if series.buckets else 0
        with series.lock:
            series.add_spend(cost, 1, usage)
            if record.status == "ok":
                series.ok += 1
            else:
                series.error += 1
            if series.buckets:
                series.buckets[bucket] += 1
                series.dur_sum += latency
        if record.context_tokens:
            self._add_context(series, record.context_tokens, record.context_cost_usd)
        if record.pipeline:
            self._add_pipeline_call(record, series.labels[2])
        return series

    def _add_pipeline_call(self, record: CostRecord, model: str) -> None:
        self._add_pipeline_parts(*pipeline_call(record, model, self.service, self.guard))

    def _add_pipeline_parts(
        self, head: tuple[str, ...], parts: list[tuple[str, Decimal | None, int]]
    ) -> None:
        with self._lock:
            for component, usd, tokens in parts:
                slot = self.pipeline_calls.get((*head, component))
                if slot is None:
                    slot = self.pipeline_calls[(*head, component)] = [ZERO, 0]
                if usd is not None:
                    slot[0] += usd
                slot[1] += tokens

    def snapshot_pipeline_calls(self) -> dict[tuple[str, ...], tuple[Decimal, int]]:
        with self._lock:
            return {k: (Decimal(v[0]), int(v[1])) for k, v in self.pipeline_calls.items()}

    def _add_context(
        self, series: SpendSeries, tokens: Mapping[str, int], costs: Mapping[str, Decimal]
    ) -> None:
        admit = self.guard.admit
        for source, count in tokens.items():
            label = admit("source", source)
            with series.lock:
                slot = series.context.get(label)
                if slot is None:
                    slot = series.context[label] = [0, ZERO]
                slot[0] += count
                slot[1] += costs.get(source, ZERO)

    def request_series(self, event: RequestEnd) -> HistogramSeries:
        return self.requests.get((event.service or self.service, *request_values(event)))

    def on_request_end(self, event: RequestEnd) -> None:
        self.request_series(event).observe(REQUEST_COST_BUCKETS, float(event.cost_usd))

    def on_cache(self, event: CacheEvent, count: int = 1) -> None:
        """``count`` lookups alike, which saved ``event.saved_usd`` together: one as it happens,
        or what a tally added up."""
        series = self.cache.get(
            (event.service or self.service, event.feature, event.team, event.tenant, event.cache),
            count,
        )
        with series.lock:
            series.results[event.result] = series.results.get(event.result, 0) + count
            if event.saved_usd:
                series.saved += event.saved_usd

    def on_budget(self, budget: str, spent_usd: Decimal, limit_usd: Decimal) -> None:
        name = self.guard.admit("budget", budget)
        with self._lock:
            self.budget_spent[name] = float(spent_usd)
            self.budget_limit[name] = float(limit_usd)

    def on_budget_blocked(self, budget: str) -> None:
        name = self.guard.admit("budget", budget)
        with self._lock:
            self.budget_blocked[name] = self.budget_blocked.get(name, 0) + 1

    def on_budget_state_lost(self, budget: str) -> None:
        name = self.guard.admit("budget", budget)
        with self._lock:
            self.budget_state_lost[name] = self.budget_state_lost.get(name, 0) + 1

    def on_internal_error(self, component: str) -> None:
        with self._lock:
            self.internal_errors[component] = self.internal_errors.get(component, 0) + 1

    def on_outcome(self, event: Outcome) -> None:
        if event.unmatched:
            with self._lock:
                self.unmatched[event.unmatched] = self.unmatched.get(event.unmatched, 0) + 1
            return
        series = self.outcomes.get((event.service or self.service, *_outcome_values(event)))
        with series.lock:
            slot = series.by_outcome.get(event.outcome)
            if slot is None:
                slot = series.by_outcome[event.outcome] = [0, ZERO]
            slot[0] += 1
            slot[1] += event.cost_usd

    def on_lifecycle(self, event: LifecycleCost | FixedCost) -> None:
        key = lifecycle_labels(event, self.service, self.guard)
        with self._lock:
            if isinstance(event, FixedCost):
                previous = self._fixed_keys.get(event.name)
                if previous is not None:  # declared again: the new declaration replaces it
                    self.fixed.pop(previous, None)
                self._fixed_keys[event.name] = key
                self.fixed[key] = float(event.usd_per_hour)
            else:
                self.lifecycle[key] = self.lifecycle.get(key, ZERO) + event.cost_usd

    def snapshot_lifecycle(
        self,
    ) -> tuple[dict[tuple[str, ...], Decimal], dict[tuple[str, ...], float], dict[str, int]]:
        """Copies of one-off lifecycle costs, fixed-cost rates and unmatched outcomes."""
        with self._lock:
            return dict(self.lifecycle), dict(self.fixed), dict(self.unmatched)

    def snapshot_outcomes(self) -> list[tuple[tuple[str, ...], int, Decimal]]:
        """``(OUTCOME_LABELS values, requests, cost)`` of every outcome series."""
        out: list[tuple[tuple[str, ...], int, Decimal]] = []
        for labels, series in self.outcomes.items():
            with series.lock:
                for count, cost in series.by_outcome.values():
                    out.append((labels, int(count), Decimal(cost)))
        return out

    def snapshot_scalars(
        self,
    ) -> tuple[dict[str, float], dict[str, float], dict[str, int], dict[str, int], dict[str, int]]:
        """Copies of budget spent, budget limits, blocked calls, internal errors and budget
        state losses."""
        with self._lock:
            return (
                dict(self.budget_spent),
                dict(self.budget_limit),
                dict(self.budget_blocked),
                dict(self.internal_errors),
                dict(self.budget_state_lost),
            )

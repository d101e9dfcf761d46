"""Single-process Prometheus path: a collector that renders ``SpendAggregate`` at scrape time.

Recording stays a handful of integer additions under one lock (see ``_aggregate``); the samples
are built only when ``/metrics`` is scraped.  Not used under prometheus-client multiprocess mode,
where each worker's values must live in its mmap files (``_prom_client`` does that).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from costwatch._core.failopen import errors
from costwatch.exporters import names
from costwatch.exporters._aggregate import HistogramSeries, SpendAggregate
from costwatch.exporters.names import (
    CACHE_RESULT_VALUES,
    DURATION_BUCKETS,
    REQUEST_COST_BUCKETS,
    TOKEN_TYPE_VALUES,
    MetricSpec,
)


def _le(bounds: tuple[float, ...]) -> tuple[str, ...]:
    """The ``le`` label values prometheus-client itself would write, ending with ``+Inf``."""
    return tuple(floatToGoString(b) for b in (*bounds, float("inf")))  # type: ignore[no-untyped-call]


_DURATION_LE = _le(DURATION_BUCKETS)
_REQUEST_LE = _le(REQUEST_COST_BUCKETS)


def _family(spec: MetricSpec) -> Metric:
    if spec.kind == "counter":
        return _counter(spec)
    if spec.kind == "gauge":
        return _gauge(spec)
    return _histogram(spec)


def _counter(spec: MetricSpec) -> CounterMetricFamily:
    return CounterMetricFamily(spec.family, spec.help, labels=spec.labels)


def _gauge(spec: MetricSpec) -> GaugeMetricFamily:
    return GaugeMetricFamily(spec.family, spec.help, labels=spec.labels)


def _histogram(spec: MetricSpec) -> HistogramMetricFamily:
    return HistogramMetricFamily(spec.family, spec.help, labels=spec.labels)


def _cumulative(le: tuple[str, ...], counts: list[int]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    acc = 0
    for bound, count in zip(le, counts, strict=True):
        acc += count
        out.append((bound, float(acc)))
    return out


class AggregateCollector(Collector):
    """Exposes one ``SpendAggregate`` under the names of ``names.PROMETHEUS_METRICS``."""

    def __init__(self, aggregate: SpendAggregate) -> None:
        self.aggregate = aggregate

    def describe(self) -> Iterator[Metric]:
        """Names only, so that registering a second collector on the registry fails loudly."""
        for spec in names.PROMETHEUS_METRICS:
            yield _family(spec)

    def collect(self) -> Iterator[Metric]:
        try:
            self.aggregate.sync()
        except Exception as exc:  # serve what is aggregated rather than fail the scrape
            errors.report("exporter.prometheus", exc)
        families = {
            f.name: f
            for f in (
                *self._spend(),
                self._requests(),
                *self._cache(),
                *self._scalars(),
                *self._lifecycle(),
            )
        }
        for spec in names.PROMETHEUS_METRICS:  # the order plain prometheus-client would use
            yield families[spec.family]

    def _spend(self) -> Iterator[Metric]:
        cost = _counter(names.COST_USD)
        tokens = _counter(names.TOKENS)
        requests = _counter(names.REQUESTS)
        duration = _histogram(names.DURATION)
        context_tokens = _counter(names.CONTEXT_TOKENS)
        context_cost = _counter(names.CONTEXT_COST)
        unpriced = _counter(names.UNPRICED)
        for labels, series in self.aggregate.spend.items():
            with series.lock:
                spent = series.cost
                n_unpriced = series.unpriced
                counts = list(series.tokens)
                ok, error = series.ok, series.error
                buckets = list(series.buckets)
                dur_sum = series.dur_sum
                context = [(src, int(t), float(c)) for src, (t, c) in series.context.items()]
            if spent is not None:
                cost.add_metric(labels, float(spent))
            if n_unpriced:
                unpriced.add_metric(labels, float(n_unpriced))
            for token_type, count in zip(TOKEN_TYPE_VALUES, counts, strict=True):
                if count:
                    tokens.add_metric((*labels, token_type), float(count))
            if ok:
                requests.add_metric((*labels, "ok"), float(ok))
            if error:
                requests.add_metric((*labels, "error"), float(error))
            if buckets:
                duration.add_metric(labels, _cumulative(_DURATION_LE, buckets), dur_sum)
            for source, n_tokens, context_usd in context:
                context_tokens.add_metric((*labels, source), float(n_tokens))
                context_cost.add_metric((*labels, source), context_usd)
        yield from (cost, tokens, requests, duration, context_tokens, context_cost, unpriced)

    def _requests(self) -> Metric:
        family = _histogram(names.REQUEST_COST)
        for labels, series in self.aggregate.requests.items():
            buckets, total = _histogram_snapshot(series)
            family.add_metric(labels, _cumulative(_REQUEST_LE, buckets), total)
        return family

    def _cache(self) -> Iterator[Metric]:
        requests = _counter(names.CACHE_REQUESTS)
        saved = _counter(names.CACHE_SAVED)
        for labels, series in self.aggregate.cache.items():
            with series.lock:
                results = dict(series.results)
                saved_usd = series.saved
            ordered = [r for r in CACHE_RESULT_VALUES if r in results]
            ordered += sorted(r for r in results if r not in CACHE_RESULT_VALUES)
            for result in ordered:
                requests.add_metric((*labels, result), float(results[result]))
            saved.add_metric(labels, float(saved_usd))
        yield requests
        yield saved

    def _scalars(self) -> Iterator[Metric]:
        service = self.aggregate.service
        spent, limits, blocked, internal, lost = self.aggregate.snapshot_scalars()
        spent_family = _gauge(names.BUDGET_SPENT)
        for budget, value in spent.items():
            spent_family.add_metric((service, budget), value)
        limit_family = _gauge(names.BUDGET_LIMIT)
        for budget, value in limits.items():
            limit_family.add_metric((service, budget), value)
        blocked_family = _counter(names.BUDGET_BLOCKED)
        for budget, count in blocked.items():
            blocked_family.add_metric((service, budget), float(count))
        lost_family = _counter(names.BUDGET_STATE_LOST)
        for budget, count in lost.items():
            lost_family.add_metric((service, budget), float(count))
        internal_family = _counter(names.INTERNAL_ERRORS)
        for component, count in internal.items():
            internal_family.add_metric((service, component), float(count))
        overflow_family = _counter(names.LABEL_OVERFLOW)
        for label, count in self.aggregate.guard.overflow_counts().items():
            overflow_family.add_metric((service, label), float(count))
        yield from (spent_family, limit_family, blocked_family, lost_family)
        yield from (internal_family, overflow_family)

    def _lifecycle(self) -> Iterator[Metric]:
        service = self.aggregate.service
        one_off, fixed, unmatched = self.aggregate.snapshot_lifecycle()
        lifecycle = _counter(names.LIFECYCLE_COST)
        for labels, usd in one_off.items():
            lifecycle.add_metric(labels, float(usd))
        rates = _gauge(names.FIXED_COST_RATE)
        for labels, per_hour in fixed.items():
            rates.add_metric(labels, per_hour)
        outcomes = _counter(names.OUTCOMES)
        outcome_cost = _counter(names.OUTCOME_COST)
        for labels, count, cost in self.aggregate.snapshot_outcomes():
            outcomes.add_metric(labels, float(count))
            outcome_cost.add_metric(labels, float(cost))
        unmatched_family = _counter(names.OUTCOMES_UNMATCHED)
        for reason, count in unmatched.items():
            unmatched_family.add_metric((service, reason), float(count))
        pipeline_cost = _counter(names.PIPELINE_COST)
        pipeline_tokens = _counter(names.PIPELINE_TOKENS)
        for labels, (usd, tokens) in self.aggregate.snapshot_pipeline_calls().items():
            pipeline_cost.add_metric(labels, float(usd))
            pipeline_tokens.add_metric(labels, float(tokens))
        yield from (lifecycle, rates, outcomes, outcome_cost, unmatched_family)
        yield from (pipeline_cost, pipeline_tokens)


def _histogram_snapshot(series: HistogramSeries) -> tuple[list[int], float]:
    with series.lock:
        return list(series.buckets), series.total

"""Multiprocess Prometheus path: plain prometheus-client metrics with cached label children.

Under ``PROMETHEUS_MULTIPROC_DIR`` every worker writes its values into mmap files and the
``/metrics`` endpoint aggregates those files, so no custom collector may hold state here.
Children are resolved once per label combination (``GuardedTable``), so recording a call does
no ``labels()`` lookup.  Gauges use ``multiprocess_mode="mostrecent"`` (see ``names``): a budget's
spent and limit come from the shared budget backend, so the most recent write of any worker is
the right value, a dead worker's stale value is superseded, and a window reset shows at once
(``max`` would keep the last window's high-water mark until every worker wrote again).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from costwatch._core.forks import new_lock
from costwatch._core.labels import LabelGuard
from costwatch._core.record import ZERO, CostRecord
from costwatch._core.sink import CacheEvent, FixedCost, LifecycleCost, Outcome, RequestEnd
from costwatch.exporters import names
from costwatch.exporters._aggregate import (
    lifecycle_labels,
    pipeline_call,
    request_values,
    spend_values,
)
from costwatch.exporters._cardinality import GuardedTable
from costwatch.exporters.names import CACHE_LABELS, REQUEST_LABELS, SPEND_LABELS, MetricSpec


def _metric(spec: MetricSpec, registry: CollectorRegistry) -> Any:
    if spec.kind == "counter":
        return Counter(spec.family, spec.help, spec.labels, registry=registry)
    if spec.kind == "gauge":
        return Gauge(
            spec.family,
            spec.help,
            spec.labels,
            registry=registry,
            multiprocess_mode=spec.multiprocess_mode or "all",  # type: ignore[arg-type]
        )
    return Histogram(spec.family, spec.help, spec.labels, registry=registry, buckets=spec.buckets)


class _LazyChildren:
    """Children of one label tuple, created on first use (a zero series is never exposed)."""

    __slots__ = ("_children", "_labels", "_metric")

    def __init__(self, metric: Any, labels: tuple[str, ...]) -> None:
        self._metric = metric
        self._labels = labels
        self._children: dict[str, Any] = {}

    def get(self, extra: str) -> Any:
        child = self._children.get(extra)
        if child is None:
            child = self._children[extra] = self._metric.labels(*self._labels, extra)
        return child


class _SpendChildren:
    __slots__ = (
        "_m",
        "cost",
        "ctx_cost",
        "ctx_tokens",
        "duration",
        "labels",
        "requests",
        "tokens",
        "unpriced",
    )

    def __init__(self, m: ClientMetrics, labels: tuple[str, ...]) -> None:
        self._m = m
        self.labels = labels
        self.cost: Any = None
        self.unpriced: Any = None
        self.duration = m.duration.labels(*labels)
        self.tokens: list[Any] = [None] * len(names.TOKEN_TYPE_VALUES)
        self.requests = _LazyChildren(m.requests, labels)
        self.ctx_tokens = _LazyChildren(m.context_tokens, labels)
        self.ctx_cost = _LazyChildren(m.context_cost, labels)

    def cost_child(self) -> Any:
        if self.cost is None:
            self.cost = self._m.cost.labels(*self.labels)
        return self.cost

    def unpriced_child(self) -> Any:
        if self.unpriced is None:
            self.unpriced = self._m.unpriced.labels(*self.labels)
        return self.unpriced

    def token_child(self, index: int) -> Any:
        child = self.tokens[index]
        if child is None:
            child = self.tokens[index] = self._m.tokens.labels(
                *self.labels, names.TOKEN_TYPE_VALUES[index]
            )
        return child


class ClientMetrics:
    """The contract's metrics as prometheus-client objects on one registry."""

    def __init__(self, registry: CollectorRegistry, guard: LabelGuard, service: str) -> None:
        self.service = service
        self.guard = guard
        made = {spec.name: _metric(spec, registry) for spec in names.PROMETHEUS_METRICS}
        self.cost = made[names.COST_USD.name]
        self.tokens = made[names.TOKENS.name]
        self.requests = made[names.REQUESTS.name]
        self.duration = made[names.DURATION.name]
        self.request_cost = made[names.REQUEST_COST.name]
        self.context_tokens = made[names.CONTEXT_TOKENS.name]
        self.context_cost = made[names.CONTEXT_COST.name]
        self.unpriced = made[names.UNPRICED.name]
        self.cache_requests = made[names.CACHE_REQUESTS.name]
        self.cache_saved = made[names.CACHE_SAVED.name]
        self.budget_spent = made[names.BUDGET_SPENT.name]
        self.budget_limit = made[names.BUDGET_LIMIT.name]
        self.budget_blocked = made[names.BUDGET_BLOCKED.name]
        self.budget_state_lost = made[names.BUDGET_STATE_LOST.name]
        self.internal_errors = made[names.INTERNAL_ERRORS.name]
        self.label_overflow = made[names.LABEL_OVERFLOW.name]
        self.lifecycle = made[names.LIFECYCLE_COST.name]
        self.fixed_rate = made[names.FIXED_COST_RATE.name]
        self.outcomes = made[names.OUTCOMES.name]
        self.outcome_cost = made[names.OUTCOME_COST.name]
        self.unmatched = made[names.OUTCOMES_UNMATCHED.name]
        self.pipeline_cost = made[names.PIPELINE_COST.name]
        self.pipeline_tokens = made[names.PIPELINE_TOKENS.name]
        self._fixed_keys: dict[str, tuple[str, ...]] = {}
        self.spend: GuardedTable[_SpendChildren] = GuardedTable(
            SPEND_LABELS, guard, lambda labels: _SpendChildren(self, labels)
        )
        self.request_children: GuardedTable[Any] = GuardedTable(
            REQUEST_LABELS, guard, lambda labels: self.request_cost.labels(*labels)
        )
        self.cache_children: GuardedTable[tuple[_LazyChildren, Any]] = GuardedTable(
            CACHE_LABELS,
            guard,
            lambda labels: (
                _LazyChildren(self.cache_requests, labels),
                self.cache_saved.labels(*labels),
            ),
        )
        self._lock = new_lock()
        self._scalar_children: dict[tuple[str, str, str], Any] = {}
        guard.on_overflow = self._count_overflow

    def _scalar(self, metric: Any, kind: str, value: str) -> Any:
        key = (kind, self.service, value)
        child = self._scalar_children.get(key)
        if child is None:
            with self._lock:
                child = self._scalar_children.get(key)
                if child is None:
                    child = self._scalar_children[key] = metric.labels(self.service, value)
        return child

    def _count_overflow(self, label: str) -> None:
        self._scalar(self.label_overflow, "overflow", label).inc()

    def on_record(self, record: CostRecord) -> None:
        children = self.spend.get((record.service or self.service, *spend_values(record)))
        cost = record.cost_usd
        if cost is None:
            children.unpriced_child().inc()
        else:
            children.cost_child().inc(float(cost))
        usage = record.usage
        for index, count in enumerate(
            (usage.input, usage.cache_read, usage.cache_write, usage.output, usage.reasoning)
        ):
            if count:
                children.token_child(index).inc(count)
        children.requests.get("ok" if record.status == "ok" else "error").inc()
        children.duration.observe(record.latency_s)
        if record.context_tokens:
            admit = self.guard.admit
            for source, count in record.context_tokens.items():
                label = admit("source", source)
                children.ctx_tokens.get(label).inc(count)
                children.ctx_cost.get(label).inc(float(record.context_cost_usd.get(source, ZERO)))
        if record.pipeline:
            self._add_pipeline_call(record, children.labels[2])

    def _add_pipeline_call(self, record: CostRecord, model: str) -> None:
        head, parts = pipeline_call(record, model, self.service, self.guard)
        for component, usd, tokens in parts:
            if usd is not None:
                self.pipeline_cost.labels(*head, component).inc(float(usd))
            self.pipeline_tokens.labels(*head, component).inc(tokens)

    def on_request_end(self, event: RequestEnd) -> None:
        labels = (event.service or self.service, *request_values(event))
        self.request_children.get(labels).observe(float(event.cost_usd))

    def on_cache(self, event: CacheEvent) -> None:
        requests, saved = self.cache_children.get(
            (event.service or self.service, event.feature, event.team, event.tenant, event.cache)
        )
        requests.get(event.result).inc()
        if event.saved_usd:
            saved.inc(float(event.saved_usd))

    def on_budget(self, budget: str, spent_usd: Decimal, limit_usd: Decimal) -> None:
        name = self.guard.admit("budget", budget)
        self._scalar(self.budget_spent, "spent", name).set(float(spent_usd))
        self._scalar(self.budget_limit, "limit", name).set(float(limit_usd))

    def on_budget_blocked(self, budget: str) -> None:
        self._scalar(self.budget_blocked, "blocked", self.guard.admit("budget", budget)).inc()

    def on_budget_state_lost(self, budget: str) -> None:
        name = self.guard.admit("budget", budget)
        self._scalar(self.budget_state_lost, "state_lost", name).inc()

    def on_internal_error(self, component: str) -> None:
        self._scalar(self.internal_errors, "internal", component).inc()

    def on_outcome(self, event: Outcome) -> None:
        if event.unmatched:
            self._scalar(self.unmatched, "unmatched", event.unmatched).inc()
            return
        admit = self.guard.admit
        labels = (
            event.service or self.service,
            event.strategy,
            admit("feature", event.feature) if event.feature else "",
            admit("team", event.team) if event.team else "",
            admit("tenant", event.tenant) if event.tenant else "",
            admit("pipeline", event.pipeline),
            event.outcome,
        )
        self.outcomes.labels(*labels).inc()
        self.outcome_cost.labels(*labels).inc(float(event.cost_usd))

    def on_lifecycle(self, event: LifecycleCost | FixedCost) -> None:
        labels = lifecycle_labels(event, self.service, self.guard)
        if isinstance(event, FixedCost):
            with self._lock:
                previous = self._fixed_keys.get(event.name)
                if previous is not None and previous != labels:
                    self.fixed_rate.remove(*previous)
                self._fixed_keys[event.name] = labels
            self.fixed_rate.labels(*labels).set(float(event.usd_per_hour))
        else:
            self.lifecycle.labels(*labels).inc(float(event.cost_usd))

"""The in-process ledger behind ``costwatch.summary()``: exact totals, thread-safe."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from operator import attrgetter
from typing import Any

from costwatch._core.failopen import errors
from costwatch._core.forks import new_lock
from costwatch._core.labels import LabelGuard
from costwatch._core.record import TOKEN_TYPES, ZERO, CostRecord
from costwatch._core.sink import BaseSink, CacheEvent, FixedCost, LifecycleCost, Outcome, RequestEnd
from costwatch.accounting._pending import FOLD_EVERY, drain
from costwatch.accounting._tally import TalliedCalls, Tally, TallyCursor


@dataclass
class Totals:
    """Totals of a group of calls."""

    calls: int = 0
    errors: int = 0
    cost_usd: Decimal = ZERO
    unpriced: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKEN_TYPES, 0))
    latency_s: float = 0.0
    context_tokens: int = 0
    context_cost_usd: Decimal = ZERO
    input_cost_usd: Decimal = ZERO

    def merge(self, other: Totals) -> None:
        self.calls += other.calls
        self.errors += other.errors
        self.cost_usd += other.cost_usd
        self.unpriced += other.unpriced
        for k, v in other.tokens.items():
            self.tokens[k] = self.tokens.get(k, 0) + v
        self.latency_s += other.latency_s
        self.context_tokens += other.context_tokens
        self.context_cost_usd += other.context_cost_usd
        self.input_cost_usd += other.input_cost_usd

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "errors": self.errors,
            "cost_usd": str(self.cost_usd),
            "unpriced": self.unpriced,
            "tokens": dict(self.tokens),
            "latency_s": self.latency_s,
            "context_tokens": self.context_tokens,
            "context_cost_usd": str(self.context_cost_usd),
            "input_cost_usd": str(self.input_cost_usd),
        }


@dataclass
class PipelineTotals:
    """Totals of ``costwatch.request`` blocks of one pipeline name."""

    requests: int = 0
    errors: int = 0
    cost_usd: Decimal = ZERO
    strategies: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    """Requests by the outcome they were given (``success``, ``failure``)."""
    outcome_cost_usd: dict[str, Decimal] = field(default_factory=dict)
    """The cost of the requests of each outcome."""
    calls: dict[tuple[str, str, str], Totals] = field(default_factory=dict)
    """The pipeline's calls by ``(stage, provider, model)``: its traffic profile."""

    @property
    def cost_per_request_usd(self) -> Decimal:
        return self.cost_usd / self.requests if self.requests else ZERO

    @property
    def successes(self) -> int:
        return self.outcomes.get("success", 0)

    @property
    def cost_per_success_usd(self) -> Decimal | None:
        """The cost of all the pipeline's requests divided by its successful ones (the "cost
        of pass"); ``None`` before any request was said to succeed."""
        return self.cost_usd / self.successes if self.successes else None

    def as_dict(self) -> dict[str, Any]:
        per_success = self.cost_per_success_usd
        return {
            "requests": self.requests,
            "errors": self.errors,
            "cost_usd": str(self.cost_usd),
            "cost_per_request_usd": str(self.cost_per_request_usd),
            "cost_per_success_usd": None if per_success is None else str(per_success),
            "strategies": dict(self.strategies),
            "outcomes": dict(self.outcomes),
            "outcome_cost_usd": {k: str(v) for k, v in self.outcome_cost_usd.items()},
            "calls": {"/".join(k): v.as_dict() for k, v in sorted(self.calls.items())},
        }


@dataclass
class LifecycleTotals:
    """One-off lifecycle costs (training runs, indexing runs) of one kind and name."""

    kind: str
    name: str
    strategy: str
    pipeline: str
    runs: int = 0
    cost_usd: Decimal = ZERO
    last: LifecycleCost | None = None
    """The latest run, with the detail of its arithmetic."""


@dataclass
class FixedCostTotals:
    """A declared fixed cost and what it accrued up to the summary."""

    declared: FixedCost
    accrued_usd: Decimal


@dataclass
class CacheTotals:
    hits: int = 0
    misses: int = 0
    errors: int = 0
    skips: int = 0
    saved_usd: Decimal = ZERO

    @property
    def hit_rate(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


@dataclass
class Summary:
    """A snapshot of everything recorded in this process since ``configure()``."""

    total: Totals
    by_strategy: dict[str, Totals]
    by_stage: dict[str, Totals]
    by_model: dict[str, Totals]
    """Generation and embedding calls by model; retrieval calls are in ``by_source``."""
    by_feature: dict[str, Totals]
    by_team: dict[str, Totals]
    by_tenant: dict[str, Totals]
    by_pipeline: dict[str, PipelineTotals]
    context_by_source: dict[str, tuple[int, Decimal]]
    cache: dict[str, CacheTotals]
    internal_errors: dict[str, int]
    by_source: dict[str, Totals] = field(default_factory=dict)
    """Retrieval calls by source (``@retrieval(source=...)``)."""
    lifecycle: dict[tuple[str, str], LifecycleTotals] = field(default_factory=dict)
    """One-off lifecycle costs by ``(kind, name)``."""
    fixed_costs: dict[str, FixedCostTotals] = field(default_factory=dict)
    """Declared fixed costs by name, accrued to the time of the summary."""
    outcomes_unmatched: dict[str, int] = field(default_factory=dict)
    """Late outcomes that matched no waiting request, by reason."""
    period_s: float = 0.0
    """Seconds (runtime clock) from ``configure()`` to this summary."""

    @property
    def lifecycle_usd(self) -> Decimal:
        """One-off lifecycle costs plus the fixed costs accrued so far."""
        one_off = sum((t.cost_usd for t in self.lifecycle.values()), ZERO)
        return one_off + sum((f.accrued_usd for f in self.fixed_costs.values()), ZERO)

    @property
    def total_usd(self) -> Decimal:
        return self.total.cost_usd

    @property
    def cache_saved_usd(self) -> Decimal:
        return sum((c.saved_usd for c in self.cache.values()), ZERO)

    @property
    def context_share_of_input_cost(self) -> float:
        """Retrieved-context cost as a share of the input-side cost of all generations."""
        gen = self.by_stage.get("generation")
        if gen is None or not gen.input_cost_usd:
            return 0.0
        return float(gen.context_cost_usd / gen.input_cost_usd)

    def as_dict(self) -> dict[str, Any]:
        def group(d: dict[str, Totals]) -> dict[str, Any]:
            return {k: v.as_dict() for k, v in sorted(d.items())}

        return {
            "total": self.total.as_dict(),
            "by_strategy": group(self.by_strategy),
            "by_stage": group(self.by_stage),
            "by_model": group(self.by_model),
            "by_source": group(self.by_source),
            "by_feature": group(self.by_feature),
            "by_team": group(self.by_team),
            "by_tenant": group(self.by_tenant),
            "by_pipeline": {k: v.as_dict() for k, v in sorted(self.by_pipeline.items())},
            "context_by_source": {
                k: {"tokens": t, "cost_usd": str(c)}
                for k, (t, c) in sorted(self.context_by_source.items())
            },
            "cache": {
                k: {
                    "hits": v.hits,
                    "misses": v.misses,
                    "errors": v.errors,
                    "skips": v.skips,
                    "hit_rate": v.hit_rate,
                    "saved_usd": str(v.saved_usd),
                }
                for k, v in sorted(self.cache.items())
            },
            "internal_errors": dict(self.internal_errors),
            "lifecycle": [
                {
                    "kind": t.kind,
                    "name": t.name,
                    "strategy": t.strategy,
                    "pipeline": t.pipeline,
                    "runs": t.runs,
                    "cost_usd": str(t.cost_usd),
                }
                for _, t in sorted(self.lifecycle.items())
            ],
            "fixed_costs": {
                k: v.declared.as_dict() | {"accrued_usd": str(v.accrued_usd)}
                for k, v in sorted(self.fixed_costs.items())
            },
            "outcomes_unmatched": dict(self.outcomes_unmatched),
            "period_s": self.period_s,
        }


# Ledger rows are lists indexed by these positions (cheaper to update than attribute objects).
_CALLS, _ERRORS, _COST, _UNPRICED, _IN, _CR, _CW, _OUT, _REASON, _LAT, _CTX_T, _CTX_C, _IN_COST = (
    range(13)
)


def _new_row() -> list[Any]:
    return [0, 0, ZERO, 0, 0, 0, 0, 0, 0, 0.0, 0, ZERO, ZERO]


_LEDGER_LABELS = ("strategy", "stage", "provider", "model", "feature", "team", "tenant")
"""A ledger row's key, in order: label values passed through the guard."""

_ledger_key = attrgetter(*_LEDGER_LABELS)
"""The ``_LEDGER_LABELS`` values of a ``CostRecord`` or of ``TalliedCalls``, as a tuple."""

_profile_key = attrgetter("pipeline", "stage", "provider", "model")
"""The row of a call inside a request in its pipeline's traffic profile: the request's name,
then the ``(stage, provider, model)`` that ``PipelineTotals.calls`` is keyed by."""


def _add_calls(
    rows: dict[tuple[str, ...], list[Any]],
    key: tuple[str, ...],
    calls: int,
    errors: int,
    priced: CostRecord | TalliedCalls,
) -> list[Any]:
    """Add ``calls`` calls (``errors`` of them failed) to the row of ``key`` in ``rows``, with
    the cost, tokens and latency of ``priced`` (one record, or tallied calls; a cost of None:
    the calls were unpriced), and return the row.  The caller holds the ledger's lock."""
    row = rows.get(key)
    if row is None:
        row = rows[key] = _new_row()
    row[_CALLS] += calls
    row[_ERRORS] += errors
    cost = priced.cost_usd
    if cost is None:
        row[_UNPRICED] += calls
    else:
        row[_COST] += cost
    usage = priced.usage
    row[_IN] += usage.input
    row[_CR] += usage.cache_read
    row[_CW] += usage.cache_write
    row[_OUT] += usage.output
    row[_REASON] += usage.reasoning
    row[_LAT] += priced.latency_s
    if priced.input_cost_usd is not None:
        row[_IN_COST] += priced.input_cost_usd
    return row


def _totals(row: list[Any]) -> Totals:
    """A ledger row as ``Totals``."""
    return Totals(
        calls=row[_CALLS],
        errors=row[_ERRORS],
        cost_usd=row[_COST],
        unpriced=row[_UNPRICED],
        tokens={
            "input": row[_IN],
            "cache_read": row[_CR],
            "cache_write": row[_CW],
            "output": row[_OUT],
            "reasoning": row[_REASON],
        },
        latency_s=row[_LAT],
        context_tokens=row[_CTX_T],
        context_cost_usd=row[_CTX_C],
        input_cost_usd=row[_IN_COST],
    )


class Ledger(BaseSink):
    """Aggregates records by their full attribution key; ``summary()`` rolls the keys up.

    Keys hold guarded label values (``_core.labels``), so the ledger is bounded by the label
    limits: past a limit, values are summed under ``other``.
    """

    def __init__(
        self, labels: LabelGuard | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.labels = labels if labels is not None else LabelGuard()
        self._clock = clock
        self._started = clock()
        self._lifecycle: dict[tuple[str, str], LifecycleTotals] = {}
        self._fixed: dict[str, FixedCost] = {}
        self._unmatched: dict[str, int] = {}
        self._lock = new_lock()
        self._rows: dict[tuple[str, ...], list[Any]] = {}
        self._pipelines: dict[str, PipelineTotals] = {}
        """Requests and outcomes by pipeline (their calls are in ``_profiles``)."""
        self._profiles: dict[tuple[str, ...], list[Any]] = {}
        """Rows of the calls inside requests, by ``_profile_key``."""
        self._ends: list[RequestEnd] = []
        """Request ends not yet added to ``_pipelines`` (see ``_pending``)."""
        self._context: dict[str, list[Any]] = {}
        self._cache: dict[str, CacheTotals] = {}
        self._internal: dict[str, int] = {}
        self._tally: TallyCursor | None = None

    def attach(self, tally: Tally) -> None:
        """Also count the calls the recorder only tallied (read at each ``summary()``), and
        guard label values as the tally does."""
        self._tally = tally.cursor()
        self.labels = tally.labels

    def _absorb_tally(self) -> None:
        if self._tally is None:
            return
        try:
            taken = self._tally.take()
            lookups = self._tally.take_cache()
        except Exception as exc:  # summarise what is aggregated rather than fail the caller
            errors.report("ledger", exc)
            return
        with self._lock:
            for event, count in lookups:
                self._add_cache(event, count)
        for calls in taken:
            with self._lock:
                _add_calls(self._rows, _ledger_key(calls), calls.calls, 0, calls)
                if calls.pipeline:
                    _add_calls(self._profiles, _profile_key(calls), calls.calls, 0, calls)

    def on_record(self, record: CostRecord) -> None:
        labels = self.labels
        key = labels.guard(_LEDGER_LABELS, _ledger_key(record))
        sources = (
            [(labels.admit("source", src), src, n) for src, n in record.context_tokens.items()]
            if record.context_tokens
            else ()
        )
        failed = int(record.status != "ok")
        with self._lock:
            row = _add_calls(self._rows, key, 1, failed, record)
            if record.pipeline:
                profile = _add_calls(self._profiles, _profile_key(record), 1, failed, record)
                for source, tokens in record.context_tokens.items():
                    profile[_CTX_T] += tokens
                    profile[_CTX_C] += record.context_cost_usd.get(source, ZERO)
            for label, source, tokens in sources:
                cost = record.context_cost_usd.get(source, ZERO)
                ctx = self._context.get(label)
                if ctx is None:
                    ctx = self._context[label] = [0, ZERO]
                ctx[0] += tokens
                ctx[1] += cost
                row[_CTX_T] += tokens
                row[_CTX_C] += cost

    def on_request_end(self, event: RequestEnd) -> None:
        ends = self._ends
        ends.append(event)
        if len(ends) >= FOLD_EVERY:
            with self._lock:
                self._add_request_ends()

    def _add_request_ends(self) -> None:
        """Holds the lock: the requests ended since the last time, in their pipelines."""
        admit = self.labels.admit
        for event in drain(self._ends):
            pipeline = admit("pipeline", event.pipeline)
            strategy = admit("strategy", event.strategy)
            totals = self._pipelines.get(pipeline)
            if totals is None:
                totals = self._pipelines[pipeline] = PipelineTotals()
            totals.requests += 1
            if event.status != "ok":
                totals.errors += 1
            totals.cost_usd += event.cost_usd
            totals.strategies[strategy] = totals.strategies.get(strategy, 0) + 1

    def on_cache(self, event: CacheEvent) -> None:
        cache = self.labels.admit("cache", event.cache)
        if cache is not event.cache:
            event = event._replace(cache=cache)
        with self._lock:
            self._add_cache(event, 1)

    def on_outcome(self, event: Outcome) -> None:
        with self._lock:
            if event.unmatched:
                self._unmatched[event.unmatched] = self._unmatched.get(event.unmatched, 0) + 1
                return
            totals = self._pipelines.get(event.pipeline)
            if totals is None:
                totals = self._pipelines[event.pipeline] = PipelineTotals()
            totals.outcomes[event.outcome] = totals.outcomes.get(event.outcome, 0) + 1
            spent = totals.outcome_cost_usd.get(event.outcome, ZERO)
            totals.outcome_cost_usd[event.outcome] = spent + event.cost_usd

    def on_lifecycle(self, event: LifecycleCost | FixedCost) -> None:
        with self._lock:
            if isinstance(event, FixedCost):
                self._fixed[event.name] = event
                return
            key = (event.kind, event.name)
            totals = self._lifecycle.get(key)
            if totals is None:
                totals = self._lifecycle[key] = LifecycleTotals(
                    event.kind, event.name, event.strategy, event.pipeline
                )
            totals.runs += 1
            totals.cost_usd += event.cost_usd
            totals.last = event

    def _add_cache(self, event: CacheEvent, count: int) -> None:
        totals = self._cache.get(event.cache)
        if totals is None:
            totals = self._cache[event.cache] = CacheTotals()
        if event.result == "hit":
            totals.hits += count
            totals.saved_usd += event.saved_usd
        elif event.result == "miss":
            totals.misses += count
        elif event.result == "error":
            totals.errors += count
        else:
            totals.skips += count

    def on_internal_error(self, component: str) -> None:
        with self._lock:
            self._internal[component] = self._internal.get(component, 0) + 1

    def summary(self) -> Summary:
        self._absorb_tally()
        with self._lock:
            self._add_request_ends()
            rows = [(k, list(v)) for k, v in self._rows.items()]
            pipelines = {
                k: PipelineTotals(
                    v.requests,
                    v.errors,
                    v.cost_usd,
                    dict(v.strategies),
                    dict(v.outcomes),
                    dict(v.outcome_cost_usd),
                )
                for k, v in self._pipelines.items()
            }
            profiles = [(k, list(v)) for k, v in self._profiles.items()]
            now = self._clock()
            lifecycle = {
                k: LifecycleTotals(
                    v.kind, v.name, v.strategy, v.pipeline, v.runs, v.cost_usd, v.last
                )
                for k, v in self._lifecycle.items()
            }
            fixed = {k: FixedCostTotals(v, v.accrued_usd(now)) for k, v in self._fixed.items()}
            unmatched = dict(self._unmatched)
            context = {k: (int(v[0]), Decimal(v[1])) for k, v in self._context.items()}
            cache = {
                k: CacheTotals(v.hits, v.misses, v.errors, v.skips, v.saved_usd)
                for k, v in self._cache.items()
            }
            internal = dict(self._internal)
        for (pipeline, stage, provider, model), row in profiles:
            totals = pipelines.get(pipeline)
            if totals is None:
                totals = pipelines[pipeline] = PipelineTotals()
            totals.calls[stage, provider, model] = _totals(row)
        total = Totals()
        groups: tuple[dict[str, Totals], ...] = ({}, {}, {}, {}, {}, {}, {})
        for (strategy, stage, _provider, model, feature, team, tenant), row in rows:
            t = _totals(row)
            total.merge(t)
            # A retrieval call's "model" is its source (``@retrieval(source="kb")``).
            model_group = groups[6] if stage == "retrieval" else groups[2]
            for group, value in zip(
                (*groups[:2], model_group, *groups[3:6]),
                (strategy, stage, model, feature, team, tenant),
                strict=True,
            ):
                g = group.get(value)
                if g is None:
                    g = group[value] = Totals()
                g.merge(t)
        by_strategy, by_stage, by_model, by_feature, by_team, by_tenant, by_source = groups
        return Summary(
            total,
            by_strategy,
            by_stage,
            by_model,
            by_feature,
            by_team,
            by_tenant,
            pipelines,
            context,
            cache,
            internal,
            by_source,
            lifecycle,
            fixed,
            unmatched,
            now - self._started,
        )

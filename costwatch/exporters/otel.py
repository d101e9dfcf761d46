"""The OpenTelemetry exporter: GenAI semantic-convention metrics plus the ``costwatch.*`` metrics.

Uses ``opentelemetry-api`` only: the application owns the meter provider (and the SDK, readers
and exporters); without one, ``metrics.get_meter_provider()`` is used and nothing is set
globally.

The hot path is kept cheap: a recorded call is appended to a queue (``deque.append``).  The
queue is drained when a metric reader collects (from the callback of the first observable
instrument, which the SDK runs before it reads the synchronous instruments): counters are
aggregated in process and reported through observable counters, and the histogram
measurements (``gen_ai.client.token.usage``, ``gen_ai.client.operation.duration``,
``costwatch.duration``, ``costwatch.request.cost.usd``) are recorded then.  If no reader
collects for a while, a recording thread that finds ``max_pending`` events queued applies a
small batch of them itself, so memory stays bounded without one call paying for the backlog.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from costwatch._core.failopen import errors
from costwatch._core.forks import new_lock
from costwatch._core.labels import LabelGuard
from costwatch._core.record import CostRecord
from costwatch._core.sink import (
    ForwardingSink,
    RequestEnd,
)
from costwatch.exporters import names
from costwatch.exporters._aggregate import SpendAggregate, SpendSeries
from costwatch.exporters._otel_spans import SpanWriter, operation_name
from costwatch.exporters.names import (
    CACHE_LABELS,
    ERROR_TYPE,
    GEN_AI_OPERATION_NAME,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_TOKEN_TYPE,
    LIFECYCLE_LABELS,
    OUTCOME_LABELS,
    PIPELINE_LABELS,
    REQUEST_LABELS,
    SPEND_LABELS,
    TOKEN_TYPE_VALUES,
    MetricSpec,
    gen_ai_provider_name,
)

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
    from opentelemetry.trace import TracerProvider

__all__ = ["OTelSink", "operation_name"]

_COMPONENT = "exporter.otel"
_INSTRUMENTATION_SCOPE = "costwatch"

_NO_TOKEN_METRIC_STAGES = frozenset({"retrieval", "tool"})
_NO_TOKENS = frozenset({"none", "invalid"})
"""Usage sources of records that carry no token counts (no token metric points)."""
_MAX_CACHED_ATTRIBUTE_SETS = 10_000
_PRODUCER_BATCH = 32
"""A recording thread that finds the queue full applies this many events, not the whole queue:
the backlog's cost is spread over calls instead of landing on one (a 4096-event drain through
the SDK takes a few hundred milliseconds)."""


def _api() -> Any:
    try:
        from opentelemetry import metrics
    except ImportError as exc:  # pragma: no cover - opentelemetry-api is a core dependency
        raise ImportError(
            "costwatch's OpenTelemetry exporter needs opentelemetry-api: "
            "pip install 'costwatch[otel]'"
        ) from exc
    return metrics


class _OTelState:
    """One set of instruments and totals per meter provider, shared by the sinks built on it."""

    def __init__(self, meter: Meter, service: str, guard: LabelGuard, max_pending: int) -> None:
        self.guard = guard
        self.aggregate = SpendAggregate(service, guard, histograms=False)
        self.max_pending = max_pending
        self.pending: deque[CostRecord | RequestEnd] = deque()
        self._drain_lock = new_lock()
        self._gen_ai_attrs: dict[
            tuple[str, ...], tuple[dict[str, str], dict[str, str], dict[str, str]]
        ] = {}
        self._spend_attrs: dict[tuple[str, ...], dict[str, str]] = {}

        self.token_usage = _histogram(meter, names.GEN_AI_TOKEN_USAGE)
        self.operation_duration = _histogram(meter, names.GEN_AI_OPERATION_DURATION)
        self.duration = _histogram(meter, names.DURATION)
        self.request_cost = _histogram(meter, names.REQUEST_COST)
        # The first observable instrument drains the queue: the SDK runs every callback before
        # it reads the synchronous instruments, so the histograms above include the drained calls.
        _observable(meter, names.COST_USD, self._observe_cost)
        _observable(meter, names.TOKENS, self._observe_tokens)
        _observable(meter, names.REQUESTS, self._observe_requests)
        _observable(meter, names.UNPRICED, self._observe_unpriced)
        _observable(meter, names.CONTEXT_TOKENS, self._observe_context_tokens)
        _observable(meter, names.CONTEXT_COST, self._observe_context_cost)
        _observable(meter, names.CACHE_REQUESTS, self._observe_cache_requests)
        _observable(meter, names.CACHE_SAVED, self._observe_cache_saved)
        _observable(meter, names.BUDGET_SPENT, self._observe_budget_spent)
        _observable(meter, names.BUDGET_LIMIT, self._observe_budget_limit)
        _observable(meter, names.BUDGET_BLOCKED, self._observe_budget_blocked)
        _observable(meter, names.BUDGET_STATE_LOST, self._observe_budget_state_lost)
        _observable(meter, names.INTERNAL_ERRORS, self._observe_internal_errors)
        _observable(meter, names.LABEL_OVERFLOW, self._observe_label_overflow)
        _observable(meter, names.LIFECYCLE_COST, self._observe_lifecycle)
        _observable(meter, names.FIXED_COST_RATE, self._observe_fixed_rates)
        _observable(meter, names.OUTCOMES, self._observe_outcomes)
        _observable(meter, names.OUTCOME_COST, self._observe_outcome_cost)
        _observable(meter, names.OUTCOMES_UNMATCHED, self._observe_unmatched)
        _observable(meter, names.PIPELINE_COST, self._observe_pipeline_cost)
        _observable(meter, names.PIPELINE_TOKENS, self._observe_pipeline_tokens)

    # -- the queue ---------------------------------------------------------------------------

    def push(self, event: CostRecord | RequestEnd) -> None:
        pending = self.pending
        pending.append(event)
        if len(pending) >= self.max_pending and self._drain_lock.acquire(blocking=False):
            try:
                self._drain_locked(_PRODUCER_BATCH)
            finally:
                self._drain_lock.release()

    def drain(self) -> None:
        """Turn every queued event into totals and histogram measurements."""
        with self._drain_lock:
            self._drain_locked()

    def _drain_locked(self, limit: int = -1) -> None:
        """Apply queued events, all of them or at most ``limit``."""
        pending = self.pending
        while limit:
            limit -= 1
            try:
                event = pending.popleft()
            except IndexError:
                return
            try:
                if isinstance(event, CostRecord):
                    self._apply_record(event)
                else:
                    self._apply_request_end(event)
            except Exception as exc:
                errors.report(_COMPONENT, exc)

    def _apply_record(self, record: CostRecord) -> None:
        series = self.aggregate.add_record(record)
        attrs = self._attributes_for_gen_ai(record, series.labels[2])
        usage = record.usage
        if record.usage_source not in _NO_TOKENS and record.stage not in _NO_TOKEN_METRIC_STAGES:
            input_attrs, output_attrs = attrs[1], attrs[2]
            self.token_usage.record(usage.prompt_total, input_attrs)
            if record.stage != "embedding":
                self.token_usage.record(usage.output + usage.reasoning, output_attrs)
        self.operation_duration.record(record.latency_s, attrs[0])
        self.duration.record(record.latency_s, self._attributes(SPEND_LABELS, series.labels))

    def _apply_request_end(self, event: RequestEnd) -> None:
        series = self.aggregate.request_series(event)
        self.request_cost.record(
            float(event.cost_usd), self._attributes(REQUEST_LABELS, series.labels)
        )

    def _attributes_for_gen_ai(
        self, record: CostRecord, model: str
    ) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
        """(duration, input-token, output-token) attribute sets, cached per combination."""
        error_type = record.error_type or ("_OTHER" if record.status != "ok" else "")
        response_model = (
            self.guard.admit("model", record.response_model) if record.response_model else ""
        )
        key = (operation_name(record), record.provider, model, response_model, error_type)
        cached = self._gen_ai_attrs.get(key)
        if cached is None:
            base = {GEN_AI_OPERATION_NAME: key[0]}
            if record.provider:
                base[GEN_AI_PROVIDER_NAME] = gen_ai_provider_name(record.provider)
            if model:
                base[GEN_AI_REQUEST_MODEL] = model
            if response_model:
                base[GEN_AI_RESPONSE_MODEL] = response_model
            duration = {**base, ERROR_TYPE: error_type} if error_type else base
            cached = (
                duration,
                {**base, GEN_AI_TOKEN_TYPE: "input"},
                {**base, GEN_AI_TOKEN_TYPE: "output"},
            )
            if len(self._gen_ai_attrs) < _MAX_CACHED_ATTRIBUTE_SETS:
                self._gen_ai_attrs[key] = cached
        return cached

    def _attributes(self, names_: tuple[str, ...], labels: tuple[str, ...]) -> dict[str, str]:
        attrs = self._spend_attrs.get(labels) if names_ is SPEND_LABELS else None
        if attrs is None:
            attrs = dict(zip(names_, labels, strict=True))
            if names_ is SPEND_LABELS and len(self._spend_attrs) < _MAX_CACHED_ATTRIBUTE_SETS:
                self._spend_attrs[labels] = attrs
        return attrs

    # -- collection-time callbacks -----------------------------------------------------------

    def _per_spend_series(
        self, extra: str, read: Callable[[SpendSeries], list[tuple[str, float]]]
    ) -> list[Observation]:
        """An observation for each ``(extra label value, value)`` that ``read`` takes from a
        spend series under its lock; ``extra=""``: no extra label (the value is ignored)."""
        self.drain()
        keys = (*SPEND_LABELS, extra) if extra else SPEND_LABELS
        out = []
        for labels, series in self.aggregate.spend.items():
            with series.lock:
                values = read(series)
            for value_label, value in values:
                out.append(_observation(value, keys, (*labels, value_label) if extra else labels))
        return out

    def _observe_cost(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._per_spend_series("", lambda s: [] if s.cost is None else [("", float(s.cost))])

    def _observe_tokens(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._per_spend_series(
            "token_type",
            lambda s: [(t, n) for t, n in zip(TOKEN_TYPE_VALUES, s.tokens, strict=True) if n],
        )

    def _observe_requests(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._per_spend_series(
            "status", lambda s: [(k, n) for k, n in (("ok", s.ok), ("error", s.error)) if n]
        )

    def _observe_unpriced(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._per_spend_series("", lambda s: [("", s.unpriced)] if s.unpriced else [])

    def _context(self) -> list[tuple[tuple[str, ...], int, Decimal]]:
        self.drain()
        rows = []
        for labels, series in self.aggregate.spend.items():
            with series.lock:
                for source, (tokens, cost) in series.context.items():
                    rows.append(((*labels, source), int(tokens), Decimal(cost)))
        return rows

    def _observe_context_tokens(self, options: CallbackOptions) -> Iterable[Observation]:
        return [_observation(t, (*SPEND_LABELS, "source"), k) for k, t, _ in self._context()]

    def _observe_context_cost(self, options: CallbackOptions) -> Iterable[Observation]:
        return [_observation(float(c), (*SPEND_LABELS, "source"), k) for k, _, c in self._context()]

    def _observe_cache_requests(self, options: CallbackOptions) -> Iterable[Observation]:
        out = []
        for labels, series in self.aggregate.cache.items():
            with series.lock:
                results = dict(series.results)
            for result, count in results.items():
                out.append(_observation(count, (*CACHE_LABELS, "result"), (*labels, result)))
        return out

    def _observe_cache_saved(self, options: CallbackOptions) -> Iterable[Observation]:
        out = []
        for labels, series in self.aggregate.cache.items():
            with series.lock:
                saved = series.saved
            out.append(_observation(float(saved), CACHE_LABELS, labels))
        return out

    def _scalar(self, index: int, label: str) -> list[Observation]:
        service = self.aggregate.service
        values: Mapping[str, float] = self.aggregate.snapshot_scalars()[index]
        return [_observation(v, ("service", label), (service, k)) for k, v in values.items()]

    def _observe_budget_spent(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._scalar(0, "budget")

    def _observe_budget_limit(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._scalar(1, "budget")

    def _observe_budget_blocked(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._scalar(2, "budget")

    def _observe_budget_state_lost(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._scalar(4, "budget")

    def _observe_internal_errors(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._scalar(3, "component")

    def _observe_label_overflow(self, options: CallbackOptions) -> Iterable[Observation]:
        service = self.aggregate.service
        return [
            _observation(count, ("service", "label"), (service, label))
            for label, count in self.guard.overflow_counts().items()
        ]

    def _observe_lifecycle(self, options: CallbackOptions) -> Iterable[Observation]:
        one_off = self.aggregate.snapshot_lifecycle()[0]
        return [_observation(float(v), LIFECYCLE_LABELS, k) for k, v in one_off.items()]

    def _observe_fixed_rates(self, options: CallbackOptions) -> Iterable[Observation]:
        rates = self.aggregate.snapshot_lifecycle()[1]
        return [_observation(v, LIFECYCLE_LABELS, k) for k, v in rates.items()]

    def _observe_outcomes(self, options: CallbackOptions) -> Iterable[Observation]:
        rows = self.aggregate.snapshot_outcomes()
        return [_observation(n, OUTCOME_LABELS, k) for k, n, _ in rows]

    def _observe_outcome_cost(self, options: CallbackOptions) -> Iterable[Observation]:
        rows = self.aggregate.snapshot_outcomes()
        return [_observation(float(c), OUTCOME_LABELS, k) for k, _, c in rows]

    def _observe_unmatched(self, options: CallbackOptions) -> Iterable[Observation]:
        service = self.aggregate.service
        unmatched = self.aggregate.snapshot_lifecycle()[2]
        return [_observation(n, ("service", "reason"), (service, r)) for r, n in unmatched.items()]

    def _observe_pipeline_cost(self, options: CallbackOptions) -> Iterable[Observation]:
        self.drain()
        rows = self.aggregate.snapshot_pipeline_calls()
        return [_observation(float(usd), PIPELINE_LABELS, k) for k, (usd, _) in rows.items()]

    def _observe_pipeline_tokens(self, options: CallbackOptions) -> Iterable[Observation]:
        self.drain()
        rows = self.aggregate.snapshot_pipeline_calls()
        return [_observation(n, PIPELINE_LABELS, k) for k, (_, n) in rows.items()]


def _observation(value: float, keys: tuple[str, ...], labels: tuple[str, ...]) -> Observation:
    from opentelemetry.metrics import Observation

    return Observation(value, dict(zip(keys, labels, strict=True)))


def _histogram(meter: Meter, spec: MetricSpec) -> Any:
    return meter.create_histogram(
        spec.otel_name,
        unit=spec.otel_unit,
        description=spec.help,
        explicit_bucket_boundaries_advisory=list(spec.buckets),
    )


def _observable(meter: Meter, spec: MetricSpec, callback: Any) -> None:
    create = (
        meter.create_observable_gauge if spec.kind == "gauge" else (meter.create_observable_counter)
    )
    create(spec.otel_name, callbacks=[callback], unit=spec.otel_unit, description=spec.help)


_states: weakref.WeakKeyDictionary[Any, _OTelState] = weakref.WeakKeyDictionary()
_states_lock = new_lock()


def _state_for(
    provider: MeterProvider,
    service: str,
    label_limits: Mapping[str, int] | None,
    max_pending: int,
) -> _OTelState:
    from costwatch._version import __version__

    with _states_lock:
        try:
            state = _states.get(provider)
        except TypeError:  # a provider that cannot be weakly referenced: not shared
            state = None
        if state is not None:
            state.aggregate.service = service
            state.guard.set_limits(label_limits)
            state.max_pending = max_pending
            return state
        meter = provider.get_meter(_INSTRUMENTATION_SCOPE, __version__)
        state = _OTelState(meter, service, LabelGuard(label_limits), max_pending)
        with contextlib.suppress(TypeError):  # see above: such a provider is not shared
            _states[provider] = state
        return state


class OTelSink(ForwardingSink):
    """Every costwatch event as OpenTelemetry metrics (and, with ``spans=True``, spans).

    ``meter_provider`` defaults to ``opentelemetry.metrics.get_meter_provider()``; sinks built on
    the same provider share one set of instruments.  ``label_limits`` caps distinct values of
    free-form attributes like the Prometheus exporter does.  ``flush()`` drains the queue now.
    Calls and request ends are queued; the other events go to the totals straight away.
    """

    component = "exporter.otel"

    def __init__(
        self,
        meter_provider: MeterProvider | None = None,
        *,
        service: str,
        spans: bool = False,
        tracer_provider: TracerProvider | None = None,
        label_limits: Mapping[str, int] | None = None,
        max_pending: int = 4096,
    ) -> None:
        provider = meter_provider if meter_provider is not None else _api().get_meter_provider()
        self.service = service
        self._state = _state_for(provider, service, label_limits, max(1, max_pending))
        self._push = self._state.push
        self._target = self._state.aggregate
        self._spans: Any = None
        if spans:
            self._spans = SpanWriter(tracer_provider)

    @property
    def guard(self) -> LabelGuard:
        return self._state.guard

    def flush(self) -> None:
        """Record everything queued into the instruments now (a reader's collect also does)."""
        self._state.drain()

    def on_record(self, record: CostRecord) -> None:
        self._push(record)
        if self._spans is not None:
            self._spans.write(record)

    def on_request_end(self, event: RequestEnd) -> None:
        self._push(event)

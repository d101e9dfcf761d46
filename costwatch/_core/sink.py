"""The fan-out contract: every event costwatch produces reaches each configured sink.

The ledger (``summary()``), the Prometheus exporter, the OpenTelemetry exporter and the record
log are all sinks.  A sink must be cheap and thread-safe: it is called on the host's call path.
The ledger and the single-process Prometheus exporter read plain successful calls and every
cache lookup as totals from the runtime's ``Tally`` (``_tally``); every other sink gets a
``CostRecord`` for each call and a ``CacheEvent`` for each lookup.  Beside calls: the end of
each request (``RequestEnd``), how a request ended (``Outcome``), and the costs that are not calls
(``LifecycleCost`` one-off, ``FixedCost`` recurring).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

from costwatch._core.failopen import errors
from costwatch._core.record import CostRecord


class RequestEnd(NamedTuple):
    """A ``costwatch.request`` block finished.

    A value (a tuple, like ``CacheEvent``): one is built per request, and a tuple costs a
    fraction of a frozen dataclass to build."""

    pipeline: str
    strategy: str
    cost_usd: Decimal
    unpriced_calls: int
    latency_s: float
    status: str
    service: str
    feature: str
    team: str
    tenant: str
    request_id: str = ""


OUTCOMES: tuple[str, ...] = ("success", "failure")
"""How a request can end, for the cost of a successful answer (``req.outcome("success")``)."""

UNMATCHED_REASONS: tuple[str, ...] = ("unknown", "expired", "duplicate")
"""Why a late outcome (``costwatch.outcome(request_id, ...)``) matched no remembered request."""


@dataclass(slots=True, frozen=True)
class Outcome:
    """How one ``costwatch.request`` ended, said inside the block or later by its id.

    ``cost_usd`` is the request's cost, so that sinks can total the cost of the requests of
    each outcome.  ``unmatched`` is set (one of ``UNMATCHED_REASONS``) when a late outcome
    named no request that is still remembered: then only ``outcome`` and ``service`` mean
    anything, and sinks count it apart.
    """

    outcome: str
    pipeline: str
    strategy: str
    cost_usd: Decimal
    request_id: str
    service: str
    feature: str = ""
    team: str = ""
    tenant: str = ""
    unmatched: str = ""


LIFECYCLE_KINDS: tuple[str, ...] = ("training", "indexing", "hosting", "vector_store", "other")
"""What a cost that is not a call paid for: ``training`` runs and ``indexing`` runs are one-off
(``LifecycleCost``); ``hosting`` (a fine-tuned deployment, GPU nodes), ``vector_store`` plans and
``other`` are recurring (``FixedCost``), though a one-off of any kind may be recorded too."""


@dataclass(slots=True, frozen=True, kw_only=True)
class _Attributed:
    """Who a cost that is not a call is attributed to, as a call is (keyword-only fields)."""

    strategy: str = ""
    pipeline: str = ""
    service: str = ""
    feature: str = ""
    team: str = ""
    tenant: str = ""


@dataclass(slots=True, frozen=True)
class LifecycleCost(_Attributed):
    """A one-off cost that is not a per-request call: a training run, an indexing run.

    ``detail`` says how ``cost_usd`` was computed (tokens, epochs, price per million and the
    price's source), so that every figure can be traced.
    """

    kind: str
    name: str
    cost_usd: Decimal
    price_source: str
    provider: str = ""
    model: str = ""
    timestamp: float = 0.0
    detail: tuple[tuple[str, str], ...] = ()

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {f: getattr(self, f) for f in _LIFECYCLE_FIELDS}
        out["cost_usd"] = str(self.cost_usd)
        out["detail"] = dict(self.detail)
        return out


@dataclass(slots=True, frozen=True)
class FixedCost(_Attributed):
    """A recurring cost declared by ``costwatch.fixed_cost``: it accrues at ``usd_per_hour``
    over wall-clock time from ``started_at`` (the runtime clock) whatever the traffic.

    Identified by ``name``: processes that declare the same name declare the same cost (see
    ``costwatch.accounting._lifecycle`` for why that is never multiplied).
    """

    name: str
    kind: str
    usd_per_hour: Decimal
    started_at: float
    price_source: str = "user"
    usd_per_month: Decimal | None = None
    """As declared, when it was declared per month (``usd_per_hour`` is derived from it)."""

    def accrued_usd(self, now: float) -> Decimal:
        """What it cost from ``started_at`` to ``now``: exact for the clock's value."""
        elapsed = Decimal(repr(now)) - Decimal(repr(self.started_at))
        if elapsed <= 0:
            return Decimal(0)
        if self.usd_per_month is not None:
            return self.usd_per_month * elapsed / HOURS_PER_MONTH / 3600
        return self.usd_per_hour * elapsed / 3600

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {f: getattr(self, f) for f in _FIXED_FIELDS}
        out["usd_per_hour"] = str(self.usd_per_hour)
        out["usd_per_month"] = None if self.usd_per_month is None else str(self.usd_per_month)
        return out


HOURS_PER_MONTH = Decimal(720)
"""A month is 30 days of 24 hours throughout costwatch (Azure's $1.70/h hosting = $1,224 a
month): monthly figures and per-hour rates convert with this one number."""

_LIFECYCLE_FIELDS = tuple(LifecycleCost.__dataclass_fields__)
_FIXED_FIELDS = tuple(FixedCost.__dataclass_fields__)


class CacheEvent(NamedTuple):
    """One lookup of a ``RetrievalCache``: ``result`` is hit, miss, error or skip.

    A value (a tuple): lookups that are alike count in one row of the runtime's ``Tally``.
    """

    cache: str
    result: str
    saved_usd: Decimal
    service: str
    feature: str
    team: str
    tenant: str


@runtime_checkable
class Sink(Protocol):
    """What ``costwatch.configure(sinks=[...])`` accepts (public as ``costwatch.Sink``).

    Subclass ``costwatch.BaseSink`` and override the events you need.  Each method runs on the
    host's call path (or a budget's settlement thread): keep it cheap and thread-safe.  An
    exception it raises is costwatch's own failure: counted, logged rate-limited and swallowed,
    raised only in strict mode.
    """

    def on_record(self, record: CostRecord) -> None: ...

    def on_request_end(self, event: RequestEnd) -> None: ...

    def on_cache(self, event: CacheEvent) -> None: ...

    def on_budget(self, budget: str, spent_usd: Decimal, limit_usd: Decimal) -> None: ...

    def on_budget_blocked(self, budget: str) -> None: ...

    def on_outcome(self, event: Outcome) -> None: ...

    def on_lifecycle(self, event: LifecycleCost | FixedCost) -> None: ...

    def on_budget_state_lost(self, budget: str) -> None: ...

    def on_internal_error(self, component: str) -> None: ...


class BaseSink:
    """No-op implementations, so a sink only writes the events it cares about."""

    def on_record(self, record: CostRecord) -> None:
        return None

    def on_request_end(self, event: RequestEnd) -> None:
        return None

    def on_cache(self, event: CacheEvent) -> None:
        return None

    def on_budget(self, budget: str, spent_usd: Decimal, limit_usd: Decimal) -> None:
        return None

    def on_budget_blocked(self, budget: str) -> None:
        return None

    def on_outcome(self, event: Outcome) -> None:
        return None

    def on_lifecycle(self, event: LifecycleCost | FixedCost) -> None:
        return None

    def on_budget_state_lost(self, budget: str) -> None:
        return None

    def on_internal_error(self, component: str) -> None:
        return None


_FAIL_OPEN_EVENTS = frozenset(
    name for name in vars(BaseSink) if name.startswith("on_") and name != "on_internal_error"
)
"""The events a ``FailOpenSink`` shields.  Not ``on_internal_error``: ``errors.report`` calls it
(reporting from it would recurse), and ``InternalErrors`` already shields its listeners."""


def _fail_open(method: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(method)
    def shielded(self: FailOpenSink, *args: Any) -> None:
        try:
            method(self, *args)
        except Exception as exc:
            errors.report(self.component, exc)

    return shielded


class FailOpenSink(BaseSink):
    """A sink whose every event method fails open: an exception is counted under
    ``component`` (``costwatch_internal_errors_total``), logged rate-limited and swallowed,
    raised only in strict mode.

    Subclasses override the events as on ``BaseSink``; each override is wrapped once, when the
    class is defined, so no method repeats the ``try``/``except``.
    """

    component: ClassVar[str] = "sink"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in _FAIL_OPEN_EVENTS & vars(cls).keys():
            setattr(cls, name, _fail_open(vars(cls)[name]))


class ForwardingSink(FailOpenSink):
    """A fail-open sink that hands each event to ``self._target``: an exporter's totals, which
    take the events of a ``Sink`` without failing open themselves."""

    _target: Sink

    def on_record(self, record: CostRecord) -> None:
        self._target.on_record(record)

    def on_request_end(self, event: RequestEnd) -> None:
        self._target.on_request_end(event)

    def on_cache(self, event: CacheEvent) -> None:
        self._target.on_cache(event)

    def on_budget(self, budget: str, spent_usd: Decimal, limit_usd: Decimal) -> None:
        self._target.on_budget(budget, spent_usd, limit_usd)

    def on_budget_blocked(self, budget: str) -> None:
        self._target.on_budget_blocked(budget)

    def on_outcome(self, event: Outcome) -> None:
        self._target.on_outcome(event)

    def on_lifecycle(self, event: LifecycleCost | FixedCost) -> None:
        self._target.on_lifecycle(event)

    def on_budget_state_lost(self, budget: str) -> None:
        self._target.on_budget_state_lost(budget)

    def on_internal_error(self, component: str) -> None:
        # Not shielded: errors.report calls this (see _FAIL_OPEN_EVENTS).
        self._target.on_internal_error(component)

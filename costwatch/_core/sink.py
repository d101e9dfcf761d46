"""The fan-out contract: every event costwatch produces reaches each configured sink.

The ledger (``summary()``), the Prometheus exporter and the OpenTelemetry exporter are all
sinks.  A sink must be cheap and thread-safe: it is called on the host's call path.  The ledger
and the single-process Prometheus exporter read plain successful calls and every cache lookup as
totals from the runtime's ``Tally`` (``_tally``); every other sink gets a ``CostRecord`` for
each call and a ``CacheEvent`` for each lookup.
"""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple, Protocol, runtime_checkable

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

    def on_budget_state_lost(self, budget: str) -> None:
        return None

    def on_internal_error(self, component: str) -> None:
        return None

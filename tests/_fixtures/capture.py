"""A sink that keeps every event, so tests can look at exactly what costwatch recorded."""

from __future__ import annotations

import threading
from decimal import Decimal

from costwatch._core.record import CostRecord
from costwatch._core.sink import BaseSink, CacheEvent, FixedCost, LifecycleCost, Outcome, RequestEnd


class CaptureSink(BaseSink):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records: list[CostRecord] = []
        self.requests: list[RequestEnd] = []
        self.cache: list[CacheEvent] = []
        self.budgets: list[tuple[str, Decimal, Decimal]] = []
        self.blocked: list[str] = []
        self.state_lost: list[str] = []
        self.internal_errors: list[str] = []
        self.outcomes: list[Outcome] = []
        self.lifecycle: list[LifecycleCost | FixedCost] = []

    def on_record(self, record: CostRecord) -> None:
        with self._lock:
            self.records.append(record)

    def on_request_end(self, event: RequestEnd) -> None:
        with self._lock:
            self.requests.append(event)

    def on_cache(self, event: CacheEvent) -> None:
        with self._lock:
            self.cache.append(event)

    def on_budget(self, budget: str, spent_usd: Decimal, limit_usd: Decimal) -> None:
        with self._lock:
            self.budgets.append((budget, spent_usd, limit_usd))

    def on_budget_blocked(self, budget: str) -> None:
        with self._lock:
            self.blocked.append(budget)

    def on_outcome(self, event: Outcome) -> None:
        with self._lock:
            self.outcomes.append(event)

    def on_lifecycle(self, event: LifecycleCost | FixedCost) -> None:
        with self._lock:
            self.lifecycle.append(event)

    def on_budget_state_lost(self, budget: str) -> None:
        with self._lock:
            self.state_lost.append(budget)

    def on_internal_error(self, component: str) -> None:
        with self._lock:
            self.internal_errors.append(component)

    @property
    def last(self) -> CostRecord:
        return self.records[-1]

    @property
    def events(self) -> list[CacheEvent]:
        """The cache events, in order."""
        return self.cache

    def results(self) -> list[str]:
        """The ``result`` of each cache lookup, in order."""
        return [e.result for e in self.cache]

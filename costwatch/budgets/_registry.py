"""``BudgetRegistry``: the budgets of one runtime and their backend, the call path (reserve,
refuse, charge, backend-down policy), status reads and shutdown.  What it does off the call
path (the settlement thread) is in ``_budget_settle.SettlementWorker``.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from costwatch._core.errors import BudgetExceeded
from costwatch._core.failopen import errors
from costwatch.budgets._alerts import WebhookSender, logger, utc
from costwatch.budgets._backend import (
    BackendUnavailable,
    BudgetBackend,
    MemoryBudgetBackend,
    RedisBudgetBackend,
    ReserveRequest,
    ReserveResult,
)
from costwatch.budgets._definition import Budget, BudgetStatus
from costwatch.budgets._match import BudgetCall
from costwatch.budgets._money import from_nano, to_nano
from costwatch.budgets._queue import Pending, QueuedEvent, QueuedRegister, QueuedSettle, Reservation
from costwatch.budgets._settle import SettlementWorker

if TYPE_CHECKING:
    from costwatch._core.sink import Sink


class BudgetRegistry(SettlementWorker):
    """The budgets of one runtime, their backend and the background settlement thread.

    ``active`` is False until a budget is registered: the recorder reads it and skips all
    budget work when it is False.
    """

    def __init__(
        self,
        backend: BudgetBackend | None = None,
        clock: Callable[[], float] = time.time,
        sinks_getter: Callable[[], Sequence[Sink]] = lambda: (),
        *,
        redis_url: str | None = None,
        redis_timeout_s: float = 0.1,
        service: str = "",
        webhooks: WebhookSender | None = None,
        retry_interval_s: float = 1.0,
        gauge_refresh_s: float = 30.0,
        batch_delay_s: float = 0.005,
        max_pending: int = 100_000,
    ) -> None:
        if backend is None and redis_url:
            backend = RedisBudgetBackend.from_url(redis_url, timeout_s=redis_timeout_s)
        self._backend = backend
        self.clock = clock
        self._sinks_getter = sinks_getter
        self.service = service
        self.webhooks = webhooks or WebhookSender()
        self.active = False
        self._budgets: tuple[Budget, ...] = ()
        self._lock = threading.Lock()
        self.pending: deque[Pending] = deque()
        self._max_pending = max_pending
        self._retry_interval_s = retry_interval_s
        self._gauge_refresh_s = gauge_refresh_s
        self._batch_delay_s = batch_delay_s
        self._event = threading.Event()
        self._drain_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._thread_pid = 0
        self._atexit_registered = False
        self._closed = False
        self._backlog = False
        self._ids_pid = 0
        self._id_prefix = ""
        self._ids = itertools.count()
        self._writer = (0, "", itertools.count(1))
        self._background_error: BaseException | None = None
        self._last_down_log = 0.0
        self.backend_errors = 0
        """Calls that met an unreachable backend (on_backend_error applied)."""
        self.dropped_settlements = 0
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _after_fork(ref))

    # -- configuration ---------------------------------------------------------------------

    @property
    def backend(self) -> BudgetBackend:
        backend = self._backend
        if backend is None:
            with self._lock:
                if self._backend is None:
                    self._backend = MemoryBudgetBackend()
                backend = self._backend
        return backend

    @property
    def has_backend(self) -> bool:
        return self._backend is not None

    def use_backend(self, backend: BudgetBackend) -> None:
        """Set the backend (only before the first budget is registered)."""
        with self._lock:
            if self._budgets:
                raise RuntimeError("the budget backend cannot change once budgets are registered")
            self._backend = backend

    def add(self, budget: Budget) -> Budget:
        """Register ``budget`` (replacing one of the same name) and publish its definition."""
        with self._lock:
            others = tuple(b for b in self._budgets if b.name != budget.name)
            budget._registry = self
            self._budgets = (*others, budget)
            self.active = True
        self.pending.append(QueuedRegister(budget, self.clock()))
        self.wake()
        return budget

    def remove(self, name: str) -> None:
        with self._lock:
            self._budgets = tuple(b for b in self._budgets if b.name != name)
            self.active = bool(self._budgets)

    def get(self, name: str) -> Budget:
        for budget in self._budgets:
            if budget.name == name:
                return budget
        raise KeyError(name)

    @property
    def budgets(self) -> tuple[Budget, ...]:
        return self._budgets

    # -- the call path ---------------------------------------------------------------------

    def reserve(self, call: BudgetCall) -> Reservation | None:
        """Hold ``call``'s worst-case cost on every matching budget (one backend round trip).

        Raises ``BudgetExceeded`` for a ``block`` budget that would go over its limit, or whose
        backend is unreachable with ``on_backend_error="deny"``.  Returns ``None`` when no
        budget matches (or the backend is down and every matching budget allows).
        """
        try:
            return self._reserve(call)
        except BudgetExceeded:
            raise
        except Exception as exc:
            errors.report("budget", exc)
            return None

    def _reserve(self, call: BudgetCall) -> Reservation | None:
        matched = [b for b in self._budgets if b.matches(call)]
        if not matched:
            return None
        now = self.clock()
        now_ms = int(now * 1000)
        requests = []
        for budget in matched:
            position = budget.window.locate(now)
            amount = budget.worst_case_nano(call)
            requests.append(
                ReserveRequest(
                    budget.keys,
                    now_ms,
                    position.cur,
                    position.min,
                    budget.limit_nano,
                    amount,
                    self._next_id() if amount else "",
                    now_ms + budget.hold_ms,
                    budget.hold_key_ttl_s,
                    budget.enforce,
                )
            )
        try:
            results = self.backend.reserve(requests)
        except BackendUnavailable as exc:
            return self._backend_down(matched, exc)
        holds: list[tuple[Budget, str]] = []
        refused = -1
        for i, result in enumerate(results):
            budget = matched[i]
            budget.last_spent_nano = result.spent
            if not result.granted:
                if refused < 0:
                    refused = i
                continue
            holds.append((budget, requests[i].hold_id))
            if result.over:
                self.pending.append(
                    QueuedEvent(
                        budget,
                        "exceeded",
                        result.spent + result.reserved + requests[i].amount,
                        result.oldest_bucket,
                        now,
                    )
                )
                self.wake()
        if refused >= 0:
            self._refuse(matched[refused], requests[refused], results[refused], holds, now)
        return Reservation(self, holds)

    def _refuse(
        self,
        budget: Budget,
        request: ReserveRequest,
        result: ReserveResult,
        holds: list[tuple[Budget, str]],
        now: float,
    ) -> None:
        for other, settle_id in holds:  # release what the other budgets granted
            self.pending.append(QueuedSettle(other, settle_id, 0, now))
        self.pending.append(QueuedEvent(budget, "blocked", result.spent, result.oldest_bucket, now))
        self.wake()
        self._blocked(budget)
        position = budget.window.locate(now)
        resets = budget.window.resets_at(position, result.oldest_bucket)
        raise BudgetExceeded(
            budget.name,
            spent_usd=from_nano(result.spent),
            limit_usd=budget.limit_usd,
            window=budget.window.spec,
            resets_at=utc(resets) if resets is not None else None,
            reason=(
                f"the worst-case cost ${from_nano(request.amount)} on top of "
                f"${from_nano(result.spent)} spent and ${from_nano(result.reserved)} held by "
                f"calls in flight would pass the limit"
            ),
        )

    def _blocked(self, budget: Budget) -> None:
        for sink in self._sinks_getter():
            try:
                sink.on_budget_blocked(budget.name)
            except Exception as exc:
                errors.report("sink", exc)

    def _backend_down(self, matched: list[Budget], exc: BackendUnavailable) -> Reservation | None:
        with self._lock:
            self.backend_errors += 1
            now = time.monotonic()
            log = now - self._last_down_log >= 60
            if log:
                self._last_down_log = now
        if log:
            logger.warning(
                "costwatch budget backend unavailable (%s); applying on_backend_error "
                "(further occurrences are counted and logged at most once a minute)",
                exc,
            )
        for sink in self._sinks_getter():
            try:
                sink.on_internal_error("budget_backend")
            except Exception as sink_exc:
                errors.report("sink", sink_exc)
        for budget in matched:
            if budget.on_backend_error == "deny":
                self._blocked(budget)
                raise BudgetExceeded(
                    budget.name,
                    spent_usd=from_nano(budget.last_spent_nano),
                    limit_usd=budget.limit_usd,
                    window=budget.window.spec,
                    resets_at=None,
                    reason=f"budget backend unavailable ({exc}) and on_backend_error='deny'",
                )
        return None

    def charge(self, call: BudgetCall, cost: Decimal | None) -> None:
        """Charge a call made without a reservation (``costwatch.record``): queued, no round
        trip on the caller's path."""
        if cost is None or cost <= 0 or not self.active:
            return
        try:
            matched = [b for b in self._budgets if b.matches(call)]
            if not matched:
                return
            nano = to_nano(cost)
            now = self.clock()
            for budget in matched:
                self.pending.append(QueuedSettle(budget, "", nano, now))
            self.wake()
        except Exception as exc:
            errors.report("budget", exc)

    def status(self, name: str) -> BudgetStatus:
        budget = self.get(name)
        now = self.clock()
        position = budget.window.locate(now)
        reading = self.backend.read(budget.keys, int(now * 1000), position.min)
        resets = budget.window.resets_at(position, reading.oldest_bucket)
        return BudgetStatus(
            name=budget.name,
            window=budget.window.spec,
            window_id=position.window_id,
            action=budget.action,
            spent_usd=from_nano(reading.spent),
            reserved_usd=from_nano(reading.reserved),
            limit_usd=budget.limit_usd,
            holds=reading.holds,
            resets_at=utc(resets) if resets is not None else None,
        )

    def close(self, timeout_s: float = 2.0) -> None:
        """Flush what is pending (bounded), then stop the background threads."""
        if self._closed:
            return
        try:
            if self.pending:
                self.flush(timeout_s)
        except Exception as exc:
            errors.report("budget", exc)
        finally:
            self._closed = True
            self._event.set()
            self.webhooks.close()
            if self._backend is not None:
                self._backend.close()


def _after_fork(ref: weakref.ref[BudgetRegistry]) -> None:
    registry = ref()
    if registry is not None:
        registry._after_fork_in_child()

"""``BudgetRegistry``: the budgets of one runtime and their backend, the call path (reserve,
refuse, charge, backend-down and lost-state policies) in sync and async twins, status reads,
shutdown and the reset after a fork.  What it does off the call path is its
``SettlementWorker`` (``_settle``), a component it owns.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING, Unpack

from costwatch._core.errors import BudgetExceeded
from costwatch._core.failopen import FailOpen, errors
from costwatch.budgets._alerts import logger, utc
from costwatch.budgets._backend import (
    BackendUnavailable,
    BudgetBackend,
    MemoryBudgetBackend,
    ProcessIds,
    ReserveRequest,
    ReserveResult,
)
from costwatch.budgets._definition import Budget, BudgetStatus
from costwatch.budgets._match import BudgetCall
from costwatch.budgets._money import from_nano, to_nano
from costwatch.budgets._queue import QueuedEvent, QueuedRegister, QueuedSettle, Reservation
from costwatch.budgets._redis_backend import RedisBudgetBackend
from costwatch.budgets._settle import SettlementOptions, SettlementWorker

if TYPE_CHECKING:
    from costwatch._core.sink import Sink

_Plan = tuple[list[Budget], list[ReserveRequest], list[Budget], float]
"""(budgets to reserve on, their requests, budgets matched at $0, now) for one call."""
_FAILS_OPEN = FailOpen("budget")


class BudgetRegistry:
    """The budgets of one runtime, their backend and the settlement worker.

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
        redis_cluster: bool = False,
        service: str = "",
        **settlement: Unpack[SettlementOptions],
    ) -> None:
        if backend is None and redis_url:
            backend = RedisBudgetBackend.from_url(
                redis_url, timeout_s=redis_timeout_s, cluster=redis_cluster
            )
        self._backend = backend
        self.clock = clock
        self._sinks_getter = sinks_getter
        self.service = service
        self.active = False
        self._budgets: tuple[Budget, ...] = ()
        self._lock = threading.Lock()
        self.worker = SettlementWorker(self, **settlement)
        self._ids = ProcessIds()
        self._last_down_log = 0.0
        self.backend_errors = 0
        """Calls that met an unreachable backend (on_backend_error applied)."""
        self.state_lost = 0
        """Losses of budget state this process found (each loss is found by one process)."""
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _after_fork(ref))

    # -- configuration ---------------------------------------------------------------------

    @property
    def backend(self) -> BudgetBackend:
        backend = self._backend
        return backend if backend is not None else self._default_backend()

    def _default_backend(self) -> BudgetBackend:
        """Asked for a backend before one was chosen: the in-memory one, for good (one
        instance even when threads ask together)."""
        with self._lock:
            if self._backend is None:
                self._backend = MemoryBudgetBackend()
            return self._backend

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
        self.worker.pending.append(QueuedRegister(budget, self.clock()))
        self.worker.wake()
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

    @property
    def sinks(self) -> Sequence[Sink]:
        """The runtime's sinks as they are now (they may change while budgets run)."""
        return self._sinks_getter()

    # -- the call path (sync and async twins) -------------------------------------------------

    def reserve(self, call: BudgetCall) -> Reservation | None:
        """Hold ``call``'s worst-case cost on every matching budget (one backend round trip;
        none when that cost is $0).

        Raises ``BudgetExceeded`` for a budget that refuses: a ``block`` budget that would go
        over its limit, or any budget whose backend is unreachable with
        ``on_backend_error="deny"`` or whose state was lost with ``on_state_lost="deny"``.
        Returns ``None`` when no budget matches (or the backend is down and every matching
        budget allows).  :meth:`areserve` is its asyncio twin, differing only by ``await``.
        """
        with _FAILS_OPEN:
            plan = self._plan(call)
            if plan is None:
                return None
            if not plan[1]:
                return self._free(plan)
            return self._hold(plan)
        return None

    async def areserve(self, call: BudgetCall) -> Reservation | None:
        """The asyncio twin of :meth:`reserve`: the same lines but for ``await`` (its round
        trip, :meth:`_ahold`, never blocks the loop)."""
        with _FAILS_OPEN:
            plan = self._plan(call)
            if plan is None:
                return None
            if not plan[1]:
                return self._free(plan)
            return await self._ahold(plan)
        return None

    def _hold(self, plan: _Plan) -> Reservation | None:
        """Ask the backend to hold ``plan``'s amounts (again once, with new hold ids, when
        :meth:`_retry_after_flush` says so) and conclude; an unreachable backend:
        :meth:`_backend_down`.  :meth:`_ahold` is its asyncio face."""
        try:
            results = self.backend.reserve(plan[1])
            if self._retry_after_flush(plan, results):
                self.worker.flush()
                plan = self._renew(plan)
                results = self.backend.reserve(plan[1])
        except BackendUnavailable as exc:
            return self._backend_down(plan, exc)
        return self._conclude(plan, results)

    async def _ahold(self, plan: _Plan) -> Reservation | None:
        """:meth:`_hold` on the asyncio backend (``redis.asyncio``: the reservations of
        calls started together share round trips), with the flush on a worker thread and,
        when cancelled, the release of the holds it may have been granted."""
        backend = self.backend.asyncio()
        try:
            results = await backend.reserve(plan[1])
            if self._retry_after_flush(plan, results):
                await asyncio.to_thread(self.worker.flush)
                plan = self._renew(plan)
                results = await backend.reserve(plan[1])
        except BackendUnavailable as exc:
            return self._backend_down(plan, exc)
        except asyncio.CancelledError:  # the holds may have been granted: release them
            self._release(plan)
            raise
        return self._conclude(plan, results)

    def _plan(self, call: BudgetCall) -> _Plan | None:
        matched = [b for b in self._budgets if b.matches(call)]
        if not matched:
            return None
        now = self.clock()
        now_ms = int(now * 1000)
        held: list[Budget] = []
        free: list[Budget] = []
        requests: list[ReserveRequest] = []
        priced = call.fixed_cost_usd is not None or call.price is not None
        for budget in matched:
            amount = min(budget.worst_case_nano(call), budget.max_hold_nano)
            if amount <= 0 and priced:  # known to cost nothing (an unpriced call is checked)
                free.append(budget)
                continue
            held.append(budget)
            requests.append(
                ReserveRequest(
                    budget.keys,
                    budget.window,
                    now_ms,
                    budget.limit_nano,
                    amount,
                    self._ids.new(),
                    budget.hold_ms,
                    budget.enforce,
                    budget.epoch,
                    budget.deny_lost,
                )
            )
        return held, requests, free, now

    def _free(self, plan: _Plan) -> Reservation:
        """A call that can cost nothing is never refused and makes no round trip; its
        reservation still charges what it does cost when it settles."""
        return Reservation(self.worker, [(b, "") for b in plan[2]])

    def _retry_after_flush(self, plan: _Plan, results: list[ReserveResult]) -> bool:
        """Refused while this process still has settlements of its own queued or in flight:
        they may free what blocks it (a finished call's hold, replaced by its actual cost), so
        apply them and ask once more."""
        worker = self.worker
        if not (worker.pending or worker.draining):
            return False
        if not any(not result.granted and result.lost == 0 for result in results):
            return False
        now = plan[3]
        for budget, request, result in zip(plan[0], plan[1], results, strict=True):
            if result.granted:  # released before asking again
                worker.pending.append(QueuedSettle(budget, request.hold_id, 0, now))
        return True

    def _renew(self, plan: _Plan) -> _Plan:
        """``plan`` with new hold ids, for asking again: a release of the first holds that
        the flush could not apply (a node unreachable) is applied later, and must not drop
        a hold the second attempt was granted."""
        requests = [replace(request, hold_id=self._ids.new()) for request in plan[1]]
        return plan[0], requests, plan[2], plan[3]

    def _conclude(self, plan: _Plan, results: list[ReserveResult]) -> Reservation:
        matched, requests, free, now = plan
        holds: list[tuple[Budget, str]] = [(b, "") for b in free]
        refused = -1
        pending = self.worker.pending
        for i, result in enumerate(results):
            budget = matched[i]
            budget.last_spent_nano = result.spent
            budget.epoch = result.epoch
            if result.lost == 1:
                self.state_lost += 1
                pending.append(
                    QueuedEvent(
                        budget, "state_lost", result.spent, result.oldest_bucket, result.now_ms
                    )
                )
            if not result.granted:
                if refused < 0:
                    refused = i
                continue
            holds.append((budget, requests[i].hold_id))
            if result.over:
                pending.append(
                    QueuedEvent(
                        budget,
                        "exceeded",
                        result.spent + result.reserved + requests[i].amount,
                        result.oldest_bucket,
                        result.now_ms,
                    )
                )
        if refused >= 0:
            self._refuse(matched[refused], requests[refused], results[refused], holds, now)
        if pending:
            self.worker.wake()
        return Reservation(self.worker, holds)

    def _refuse(
        self,
        budget: Budget,
        request: ReserveRequest,
        result: ReserveResult,
        holds: list[tuple[Budget, str]],
        now: float,
    ) -> None:
        pending = self.worker.pending
        for other, settle_id in holds:  # release what the other budgets granted
            if settle_id:
                pending.append(QueuedSettle(other, settle_id, 0, now))
        pending.append(
            QueuedEvent(budget, "blocked", result.spent, result.oldest_bucket, result.now_ms)
        )
        self.worker.wake()
        self._blocked(budget)
        position = budget.window.locate(result.now_ms / 1000)
        resets = budget.window.resets_at(position, result.oldest_bucket)
        if result.lost and not result.over:
            reason = (
                "the budget's recorded spend was lost (Redis restarted without persistence or "
                "evicted its keys) and on_state_lost='deny' refuses calls until the window no "
                "longer reaches back to the loss"
            )
        else:
            reason = (
                f"the worst-case cost ${from_nano(request.amount)} on top of "
                f"${from_nano(result.spent)} spent and ${from_nano(result.reserved)} held by "
                f"calls in flight would pass the limit"
            )
        raise BudgetExceeded(
            budget.name,
            spent_usd=from_nano(result.spent),
            limit_usd=budget.limit_usd,
            window=budget.window.spec,
            resets_at=utc(resets) if resets is not None else None,
            reason=reason,
        )

    def _blocked(self, budget: Budget) -> None:
        for sink in self.sinks:
            try:
                sink.on_budget_blocked(budget.name)
            except Exception as exc:
                errors.report("sink", exc)

    def _release(self, plan: _Plan) -> None:
        """Queue the release of every hold ``plan`` asked for (releasing one that was never
        made is a no-op): for a call whose reservation's outcome it never learnt."""
        matched, requests, _, now = plan
        for budget, request in zip(matched, requests, strict=True):
            self.worker.pending.append(QueuedSettle(budget, request.hold_id, 0, now))
        self.worker.wake()

    def _backend_down(self, plan: _Plan, exc: BackendUnavailable) -> Reservation | None:
        # Some scripts may have run (a Cluster node that answered, a reply lost to a timeout).
        self._release(plan)
        matched = plan[0]
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
        for sink in self.sinks:
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
                self.worker.pending.append(QueuedSettle(budget, "", nano, now))
            self.worker.wake()
        except Exception as exc:
            errors.report("budget", exc)

    # -- reading, flushing, closing -------------------------------------------------------------

    def status(self, name: str) -> BudgetStatus:
        budget = self.get(name)
        reading = self.backend.read(budget.keys, budget.window, int(self.clock() * 1000))
        position = budget.window.locate(reading.now_ms / 1000)
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

    @property
    def pending(self) -> Sequence[object]:
        """Queued work not yet applied (read-only view for tests and diagnostics)."""
        return self.worker.pending

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Apply every queued settlement now and wait (within ``timeout_s``) for the alert
        callbacks it fired.  False if the backend is down or that took too long."""
        deadline = time.monotonic() + timeout_s
        done = self.worker.flush(timeout_s)
        return self.worker.callbacks.flush(max(0.0, deadline - time.monotonic())) and done

    def refresh_gauges(self) -> None:
        self.worker.refresh_gauges()

    def close(self, timeout_s: float = 2.0) -> None:
        """Flush what is pending (bounded), then stop the worker and close the backend."""
        try:
            self.worker.close(timeout_s)
        finally:
            if self._backend is not None:
                self._backend.close()

    def after_fork_in_child(self) -> None:
        """Rebuild this process's state in a forked child: the worker (thread, queue, locks)
        and the backend's connections.  Idempotent; called from the runtime's fork hook."""
        self._lock = threading.Lock()
        self.worker.after_fork_in_child()
        if self._backend is not None:
            self._backend.after_fork_in_child()


def _after_fork(ref: weakref.ref[BudgetRegistry]) -> None:
    registry = ref()
    if registry is not None:
        registry.after_fork_in_child()

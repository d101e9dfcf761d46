"""The background settlement of a ``BudgetRegistry`` (a mixin): the thread that drains the
queue, applies settlements in pipelined batches with retry, publishes the budget gauges and
fires threshold and event alerts once per window; also ``flush`` and the state reset after a fork.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from costwatch._core.failopen import errors
from costwatch.budgets._alerts import AlertKind, BudgetAlert, WebhookSender, deliver, logger, utc
from costwatch.budgets._backend import BackendUnavailable, BudgetBackend, Settlement
from costwatch.budgets._money import from_nano
from costwatch.budgets._queue import (
    WRITER_TTL_S,
    Pending,
    QueuedEvent,
    QueuedGroup,
    QueuedRegister,
    QueuedSettle,
    RetryLater,
)

if TYPE_CHECKING:
    from costwatch._core.sink import Sink
    from costwatch.budgets._definition import Budget


class SettlementWorker:
    """What ``BudgetRegistry`` does off the call path.  The state is set by
    ``BudgetRegistry.__init__``; it is declared here for the type checker."""

    clock: Callable[[], float]
    service: str
    webhooks: WebhookSender
    pending: deque[Pending]
    dropped_settlements: int
    _sinks_getter: Callable[[], Sequence[Sink]]
    _budgets: tuple[Budget, ...]
    _lock: threading.Lock
    _drain_lock: threading.Lock
    _event: threading.Event
    _thread: threading.Thread | None
    _thread_pid: int
    _atexit_registered: bool
    _closed: bool
    _backlog: bool
    _background_error: BaseException | None
    _max_pending: int
    _retry_interval_s: float
    _gauge_refresh_s: float
    _batch_delay_s: float
    _ids_pid: int
    _id_prefix: str
    _ids: itertools.count[int]
    _writer: tuple[int, str, itertools.count[int]]

    if TYPE_CHECKING:

        @property
        def backend(self) -> BudgetBackend: ...

    def _next_id(self) -> str:
        pid = os.getpid()
        if pid != self._ids_pid:
            self._ids_pid = pid
            self._id_prefix = f"{pid:x}.{os.urandom(4).hex()}."
            self._ids = itertools.count()
        return self._id_prefix + str(next(self._ids))

    def _next_batch(self) -> tuple[str, int]:
        """``(writer, number)`` of a settlement batch: one writer per process, numbers growing
        in the order batches are sent (only the drain, under its lock, numbers them)."""
        pid = os.getpid()
        writer = self._writer
        if writer[0] != pid:
            writer = self._writer = (pid, f"{pid:x}.{os.urandom(4).hex()}", itertools.count(1))
        return writer[1], next(writer[2])

    def wake(self) -> None:
        """Make sure the settlement thread runs (also after a fork) and signal it.

        Callers append to ``pending`` first; the thread clears the event before it drains,
        so an already-set event means the new item will be drained (no lock, no notify).
        """
        if self._thread_pid != os.getpid():
            self._start_thread()
        event = self._event
        if not event.is_set():
            event.set()

    def _start_thread(self) -> None:
        with self._lock:
            pid = os.getpid()
            if self._thread_pid == pid or self._closed:
                return
            thread = threading.Thread(target=self._run, name="costwatch-budget-settle", daemon=True)
            self._thread = thread
            self._thread_pid = pid
            thread.start()
            if not self._atexit_registered:
                self._atexit_registered = True
                ref = weakref.ref(self)
                atexit.register(_flush_at_exit, ref)

    def _run(self) -> None:
        while not self._closed:
            woke = self._event.wait(
                self._retry_interval_s if self._backlog else self._gauge_refresh_s
            )
            if woke and self._batch_delay_s > 0:
                time.sleep(self._batch_delay_s)  # gather settlements: one pipeline for many
            self._event.clear()
            if self._closed:
                return
            try:
                if woke or self.pending:
                    self._backlog = not self._drain()
                else:
                    self.refresh_gauges()
            except Exception as exc:  # only reached in strict mode: keep it for flush()
                self._background_error = exc

    def refresh_gauges(self) -> None:
        """Re-read every budget's spend and publish it (the background thread does this every
        ``gauge_refresh_s`` while idle, so an idle process's gauges follow window resets and
        other processes' spend)."""
        now = self.clock()
        now_ms = int(now * 1000)
        sinks = self._sinks_getter()
        for budget in self._budgets:
            position = budget.window.locate(now)
            try:
                reading = self.backend.read(budget.keys, now_ms, position.min)
            except BackendUnavailable:
                return
            budget.last_spent_nano = reading.spent
            spent_usd = from_nano(reading.spent)
            for sink in sinks:
                try:
                    sink.on_budget(budget.name, spent_usd, budget.limit_usd)
                except Exception as exc:
                    errors.report("sink", exc)

    def _drain(self) -> bool:
        """Apply everything pending; False when the backend is unreachable (kept for retry)."""
        with self._drain_lock:
            pending = self.pending
            while pending:
                batch: list[Pending] = []
                while pending and len(batch) < 1000:
                    batch.append(pending.popleft())
                try:
                    self._apply(batch)
                except RetryLater as retry:
                    self._requeue(retry.items)
                    return False
                except Exception as exc:
                    errors.report("budget", exc)
        return True

    def _requeue(self, items: list[Pending]) -> None:
        self.pending.extendleft(reversed(items))
        excess = len(self.pending) - self._max_pending
        if excess > 0:
            for _ in range(excess):
                self.pending.pop()
            self.dropped_settlements += excess
            logger.warning(
                "costwatch budget backend unreachable: %d queued settlements dropped", excess
            )

    def _group(self, batch: list[Pending]) -> list[QueuedGroup]:
        """One batch per budget and bucket: the holds to release and the summed cost."""
        groups = [item for item in batch if isinstance(item, QueuedGroup)]
        fresh: dict[tuple[int, int], QueuedGroup] = {}
        for item in batch:
            if not isinstance(item, QueuedSettle):
                continue
            budget = item.budget
            position = budget.window.locate(item.now)
            key = (id(budget), position.cur)
            group = fresh.get(key)
            if group is None:
                settlement = Settlement(
                    budget.keys,
                    *self._next_batch(),
                    [],
                    0,
                    position.cur,
                    position.min,
                    budget.window.spent_ttl_s(position, item.now),
                    WRITER_TTL_S,
                )
                group = fresh[key] = QueuedGroup(budget, settlement, item.now)
                groups.append(group)
            if item.hold_id:
                group.settlement.hold_ids.append(item.hold_id)
            group.settlement.cost += item.cost
            if item.now > group.now:
                group.now = item.now
        return groups

    def _apply(self, batch: list[Pending]) -> None:
        """Settle (one pipelined round trip), publish the gauges, then alert.

        Raises ``RetryLater`` with what still has to be done when the backend is unreachable;
        settlement batches are idempotent, so retrying one that did reach Redis is safe.
        """
        backend = self.backend
        groups = self._group(batch)
        registers = [item for item in batch if isinstance(item, QueuedRegister)]
        events = [item for item in batch if isinstance(item, QueuedEvent)]
        readings: dict[int, tuple[Budget, int, int, float]] = {}
        if groups:
            try:
                results = backend.settle([group.settlement for group in groups])
            except BackendUnavailable:
                raise RetryLater([*groups, *registers, *events]) from None
            for group, result in zip(groups, results, strict=True):
                readings[id(group.budget)] = (
                    group.budget,
                    result.spent,
                    result.oldest_bucket,
                    group.now,
                )
        for i, entry in enumerate(registers):
            budget = entry.budget
            try:
                backend.register(budget.name, json.dumps(budget.definition(self.service)))
                position = budget.window.locate(entry.now)
                reading = backend.read(budget.keys, int(entry.now * 1000), position.min)
            except BackendUnavailable:
                raise RetryLater([*registers[i:], *events]) from None
            readings.setdefault(
                id(budget), (budget, reading.spent, reading.oldest_bucket, entry.now)
            )
        sinks = self._sinks_getter()
        for budget, spent, oldest, now in readings.values():
            budget.last_spent_nano = spent
            spent_usd = from_nano(spent)
            for sink in sinks:
                try:
                    sink.on_budget(budget.name, spent_usd, budget.limit_usd)
                except Exception as exc:
                    errors.report("sink", exc)
            try:
                for threshold, threshold_nano in budget.threshold_nanos:
                    if spent >= threshold_nano:
                        self._alert(budget, "threshold", threshold, spent, oldest, now)
            except BackendUnavailable:
                pass  # not claimed: the next settlement of this budget evaluates it again
        for i, event in enumerate(events):
            try:
                self._alert(event.budget, event.kind, 1.0, event.spent, event.oldest, event.now)
            except BackendUnavailable:
                raise RetryLater(list(events[i:])) from None

    def _alert(
        self, budget: Budget, kind: AlertKind, threshold: float, spent: int, oldest: int, now: float
    ) -> None:
        """Fire once per window per budget: a local memo first, then the shared claim."""
        window = budget.window
        position = window.locate(now)
        label = f"t{threshold:g}" if kind == "threshold" else kind
        claim, dedupe_ms, ttl_s = window.claim(position, label, now)
        now_ms = int(now * 1000)
        seen = budget._fired.get(claim)
        if seen is not None and (dedupe_ms < 0 or now_ms - seen < dedupe_ms):
            return
        won = self.backend.claim_alert(budget.keys, claim, now_ms, dedupe_ms, ttl_s)
        budget._fired[claim] = now_ms
        if not won:
            return
        resets = window.resets_at(position, oldest)
        alert = BudgetAlert(
            budget=budget.name,
            kind=kind,
            threshold=threshold,
            spent_usd=from_nano(spent),
            limit_usd=budget.limit_usd,
            window=window.spec,
            window_id=position.window_id,
            resets_at=utc(resets) if resets is not None else None,
            action=budget.action,
            service=self.service,
            fired_at=utc(now),
        )
        deliver(alert, budget.on_alert, budget.webhook_url, self.webhooks)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Apply every queued settlement now (tests, shutdown).  False if the backend is down.

        In strict mode an error raised in the background thread is re-raised here.
        """
        deadline = time.monotonic() + timeout_s
        done = self._drain()
        while done and self.pending and time.monotonic() < deadline:
            done = self._drain()
        error, self._background_error = self._background_error, None
        if error is not None:
            raise error
        return done and not self.pending

    def _after_fork_in_child(self) -> None:
        """Locks may have been held by the parent's threads: start clean.  Settlements queued
        before the fork belong to the parent, which applies them."""
        self._lock = threading.Lock()
        self._drain_lock = threading.Lock()
        self._event = threading.Event()
        self.pending = deque()
        self._thread = None
        self._thread_pid = 0


def _flush_at_exit(ref: weakref.ref[SettlementWorker]) -> None:
    """Settlements still queued when the interpreter exits are applied (bounded wait)."""
    registry = ref()
    if registry is not None and registry.pending and not registry._closed:
        try:
            registry.flush(timeout_s=2.0)
        except Exception as exc:
            errors.report("budget", exc)

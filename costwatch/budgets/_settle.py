"""``SettlementWorker``: what a ``BudgetRegistry`` does off the call path, as a component the
registry owns.  A daemon thread drains the queue the call path appends to, applies settlements
in pipelined idempotent batches (retried while the backend is unreachable), publishes the
budget gauges and fires threshold, event and lost-state alerts once per window.

Nothing queued is lost at exit: the queue is flushed (bounded) at interpreter exit (``atexit``)
and, in a ``multiprocessing`` child (which leaves through ``os._exit``, skipping ``atexit``), by
a ``multiprocessing.util.Finalize`` registered in that child.  No signal handler is installed:
a server's graceful shutdown reaches the flush by exiting normally (see ``docs/scaling.md``).
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, TypedDict

from costwatch._core.failopen import errors
from costwatch.budgets._alerts import (
    BudgetAlert,
    CallbackRunner,
    WebhookSender,
    deliver,
    logger,
    utc,
)
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

EXIT_FLUSH_S = 2.0
"""How long the exit paths wait for queued settlements to reach the backend."""


class SettlementOptions(TypedDict, total=False):
    """What a ``BudgetRegistry`` passes through to its worker (defaults: ``SettlementWorker``)."""

    webhooks: WebhookSender | None
    callback_timeout_s: float
    retry_interval_s: float
    gauge_refresh_s: float
    batch_delay_s: float
    max_pending: int


class Owner(Protocol):
    """What the worker reads from the registry that owns it, each time it needs it: the
    backend (which may be chosen until a budget is registered), the budgets, the sinks and the
    service name may all change while it runs."""

    @property
    def backend(self) -> BudgetBackend: ...

    @property
    def budgets(self) -> tuple[Budget, ...]: ...

    @property
    def sinks(self) -> Sequence[Sink]: ...

    @property
    def clock(self) -> Callable[[], float]: ...

    @property
    def service(self) -> str: ...


class SettlementWorker:
    """The settlement queue and the daemon thread that applies it."""

    def __init__(
        self,
        owner: Owner,
        *,
        webhooks: WebhookSender | None = None,
        callback_timeout_s: float = 5.0,
        retry_interval_s: float = 1.0,
        gauge_refresh_s: float = 30.0,
        batch_delay_s: float = 0.005,
        max_pending: int = 100_000,
    ) -> None:
        self._owner = owner
        self.clock = owner.clock
        self.webhooks = webhooks or WebhookSender()
        self.webhooks.on_failure = lambda: self._count_internal("budget_webhook")
        self.callbacks = CallbackRunner(
            timeout_s=callback_timeout_s, on_timeout=lambda: self._count_internal("budget_callback")
        )
        self.pending: deque[Pending] = deque()
        self._max_pending = max_pending
        self._retry_interval_s = retry_interval_s
        self._gauge_refresh_s = gauge_refresh_s
        self._batch_delay_s = batch_delay_s
        self._lock = threading.Lock()
        self._drain_lock = threading.Lock()
        self._event = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_pid = 0
        self._exit_hooks_pid = 0
        self._atexit_registered = False
        self._closed = False
        self._backlog = False
        self._background_error: BaseException | None = None
        self._writer = (0, "", itertools.count(1))
        self.dropped_settlements = 0

    @property
    def draining(self) -> bool:
        """A batch is being applied right now (taken off ``pending``, not yet settled)."""
        return self._drain_lock.locked()

    def _count_internal(self, component: str) -> None:
        """A user's callback or webhook that timed out or failed: counted, never raised."""
        for sink in self._owner.sinks:
            try:
                sink.on_internal_error(component)
            except Exception as exc:
                errors.report("sink", exc)

    def _next_batch(self) -> tuple[str, int]:
        """``(writer, number)`` of a settlement batch: one writer per process, numbers growing
        in the order batches are sent (only the drain, under its lock, numbers them)."""
        pid = os.getpid()
        writer = self._writer
        if writer[0] != pid:
            writer = self._writer = (pid, f"{pid:x}.{os.urandom(4).hex()}", itertools.count(1))
        return writer[1], next(writer[2])

    # -- the thread ---------------------------------------------------------------------------

    def wake(self) -> None:
        """Make sure the thread runs (also after a fork) and signal it.

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
            if self._exit_hooks_pid != pid:
                self._exit_hooks_pid = pid
                _register_exit_flush(self)

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
        """Re-read every budget's spend and publish it (the thread does this every
        ``gauge_refresh_s`` while idle, so an idle process's gauges follow window resets and
        other processes' spend)."""
        now_ms = int(self.clock() * 1000)
        sinks = self._owner.sinks
        backend = self._owner.backend
        for budget in self._owner.budgets:
            try:
                reading = backend.read(budget.keys, budget.window, now_ms)
            except BackendUnavailable:
                return
            budget.last_spent_nano = reading.spent
            self._publish(sinks, budget, reading.spent)

    def _publish(self, sinks: Sequence[Sink], budget: Budget, spent: int) -> None:
        spent_usd = from_nano(spent)
        for sink in sinks:
            try:
                sink.on_budget(budget.name, spent_usd, budget.limit_usd)
            except Exception as exc:
                errors.report("sink", exc)

    # -- draining -----------------------------------------------------------------------------

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

    def _group(self, batch: list[Pending], now: float) -> list[QueuedGroup]:
        """One batch per budget and bucket: the holds to release and the summed cost, charged
        to the bucket of the latest call (its age is sent, so Redis's clock places it)."""
        groups = [item for item in batch if isinstance(item, QueuedGroup)]
        fresh: dict[tuple[int, int], QueuedGroup] = {}
        for item in batch:
            if not isinstance(item, QueuedSettle):
                continue
            budget = item.budget
            key = (id(budget), budget.window.locate(item.now).cur)
            group = fresh.get(key)
            if group is None:
                settlement = Settlement(
                    budget.keys,
                    budget.window,
                    *self._next_batch(),
                    [],
                    0,
                    int(item.now * 1000),
                    0,
                    WRITER_TTL_S,
                )
                group = fresh[key] = QueuedGroup(budget, settlement, item.now)
                groups.append(group)
            if item.hold_id:
                group.settlement.hold_ids.append(item.hold_id)
            group.settlement.cost += item.cost
            if item.now > group.now:
                group.now = item.now
                group.settlement.now_ms = int(item.now * 1000)
        for group in groups:  # a retried group ages too
            group.settlement.age_ms = max(0, int((now - group.now) * 1000))
        return groups

    def _apply(self, batch: list[Pending]) -> None:
        """Settle (one pipelined round trip), publish the gauges, then alert.

        Raises ``RetryLater`` with what still has to be done when the backend is unreachable;
        settlement batches are idempotent, so retrying one that did reach Redis is safe.
        """
        backend = self._owner.backend
        groups = self._group(batch, self.clock())
        registers = [item for item in batch if isinstance(item, QueuedRegister)]
        events = [item for item in batch if isinstance(item, QueuedEvent)]
        readings: dict[int, tuple[Budget, int, int, int]] = {}
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
                    result.now_ms,
                )
        service = self._owner.service
        for i, entry in enumerate(registers):
            budget = entry.budget
            try:
                backend.register(budget.name, json.dumps(budget.definition(service)))
                reading = backend.read(budget.keys, budget.window, int(entry.now * 1000))
            except BackendUnavailable:
                raise RetryLater([*registers[i:], *events]) from None
            readings.setdefault(
                id(budget), (budget, reading.spent, reading.oldest_bucket, reading.now_ms)
            )
        sinks = self._owner.sinks
        for budget, spent, oldest, now_ms in readings.values():
            budget.last_spent_nano = spent
            self._publish(sinks, budget, spent)
            reached = QueuedEvent(budget, "threshold", spent, oldest, now_ms)
            try:
                for threshold, threshold_nano in budget.threshold_nanos:
                    if spent >= threshold_nano:
                        self._alert(reached, threshold)
            except BackendUnavailable:
                pass  # not claimed: the next settlement of this budget evaluates it again
        for i, event in enumerate(events):
            if event.kind == "state_lost":
                self._state_lost(sinks, event)
                continue
            try:
                self._alert(event, 1.0)
            except BackendUnavailable:
                raise RetryLater(list(events[i:])) from None

    def _state_lost(self, sinks: Sequence[Sink], event: QueuedEvent) -> None:
        """Counted and alerted by the one process that found the loss (the script reports it
        once); the definition is published again (``costwatch budget status`` lists it)."""
        budget = event.budget
        for sink in sinks:
            try:
                sink.on_budget_state_lost(budget.name)
            except Exception as exc:
                errors.report("sink", exc)
        self._deliver(event, 1.0)
        self.pending.append(QueuedRegister(budget, self.clock()))

    def _alert(self, event: QueuedEvent, threshold: float) -> None:
        """Fire once per window per budget: a local memo first, then the shared claim."""
        budget, kind, now_ms = event.budget, event.kind, event.now_ms
        now = now_ms / 1000
        label = f"t{threshold:g}" if kind == "threshold" else kind
        claim, dedupe_ms, ttl_s = budget.window.claim(budget.window.locate(now), label, now)
        seen = budget._fired.get(claim)
        if seen is not None and (dedupe_ms < 0 or now_ms - seen < dedupe_ms):
            return
        won = self._owner.backend.claim_alert(budget.keys, claim, now_ms, dedupe_ms, ttl_s)
        budget._fired[claim] = now_ms
        if won:
            self._deliver(event, threshold)

    def _deliver(self, event: QueuedEvent, threshold: float) -> None:
        budget, window = event.budget, event.budget.window
        now = event.now_ms / 1000
        position = window.locate(now)
        resets = window.resets_at(position, event.oldest)
        alert = BudgetAlert(
            budget=budget.name,
            kind=event.kind,
            threshold=threshold,
            spent_usd=from_nano(event.spent),
            limit_usd=budget.limit_usd,
            window=window.spec,
            window_id=position.window_id,
            resets_at=utc(resets) if resets is not None else None,
            action=budget.action,
            service=self._owner.service,
            fired_at=utc(now),
        )
        deliver(alert, budget.on_alert, budget.webhook_url, self.webhooks, self.callbacks)

    # -- flushing, closing, forking -----------------------------------------------------------

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

    def close(self, timeout_s: float = 2.0) -> None:
        """Flush what is pending (bounded), then stop the thread."""
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

    def after_fork_in_child(self) -> None:
        """Start clean in a forked child: locks may have been held by the parent's threads,
        the thread does not exist here, and what was queued before the fork is the parent's
        to apply.  The thread starts again on the child's first settlement."""
        self._lock = threading.Lock()
        self._drain_lock = threading.Lock()
        self._event = threading.Event()
        self.pending = deque()
        self._thread = None
        self._thread_pid = 0
        self._backlog = False
        self._background_error = None
        self.webhooks.after_fork_in_child()
        self.callbacks.after_fork_in_child()


def _register_exit_flush(worker: SettlementWorker) -> None:
    """Flush at exit in this process: ``atexit`` once per interpreter, and a
    ``multiprocessing`` finaliser in a multiprocessing child (registered in the child: its
    bootstrap clears the parent's, and it leaves through ``os._exit``)."""
    ref = weakref.ref(worker)
    if not worker._atexit_registered:
        worker._atexit_registered = True
        atexit.register(_flush_at_exit, ref)
    mp = sys.modules.get("multiprocessing")
    if mp is not None and mp.parent_process() is not None:
        from multiprocessing import util

        util.Finalize(None, _flush_at_exit, args=(ref,), exitpriority=100)


def _flush_at_exit(ref: weakref.ref[SettlementWorker]) -> None:
    """Settlements still queued when the process exits are applied (bounded wait)."""
    worker = ref()
    if worker is not None and worker.pending and not worker._closed:
        try:
            worker.flush(timeout_s=EXIT_FLUSH_S)
        except Exception as exc:
            errors.report("budget", exc)

"""Budget alerts: what fired, and delivering it to callbacks, the log and a webhook.

Deciding *whether* an alert fires (once per window per budget, across processes) is the
registry's job, through the backend's alert claims.  This module only builds and delivers:
the log line is written by the settlement thread, the user's callbacks run on their own daemon
thread (``CallbackRunner``: one at a time, each given ``timeout_s``; one that overruns is left
behind on its thread and counted), and webhooks go through their own worker thread (JSON POST,
timeout, retries with backoff).  So no user code ever runs on the host's call path or on the
settlement thread, and none can keep the process from exiting.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar, Generic, Literal, TypeVar

logger = logging.getLogger("costwatch.budget")

AlertKind = Literal["threshold", "exceeded", "blocked", "state_lost"]
"""``threshold``: spend crossed a fraction of the limit; ``exceeded``: a ``warn`` budget let a
call through that would take it over the limit; ``blocked``: a ``block`` budget refused a call;
``state_lost``: the budget's spend vanished from Redis (restarted empty, evicted) and counts
from $0 again (``on_state_lost`` says whether calls are refused meanwhile)."""


@dataclass(frozen=True, slots=True)
class BudgetAlert:
    """One alert, delivered once per window per budget (across processes when Redis is used)."""

    budget: str
    kind: AlertKind
    threshold: float
    """Fraction of the limit (1.0 for ``exceeded`` and ``blocked``)."""
    spent_usd: Decimal
    limit_usd: Decimal
    window: str
    window_id: str
    resets_at: datetime | None
    action: str
    service: str
    fired_at: datetime

    @property
    def message(self) -> str:
        pct = (self.spent_usd / self.limit_usd * 100) if self.limit_usd else Decimal(0)
        if self.kind == "threshold":
            what = f"crossed {self.threshold:.0%} of its limit"
        elif self.kind == "exceeded":
            what = "let a call through that takes it over its limit (action=warn)"
        elif self.kind == "state_lost":
            what = (
                "lost its recorded spend (Redis restarted without persistence or evicted the "
                "budget's keys); spend counts from $0 again"
            )
        else:
            what = "is blocking calls: the limit is reached (action=block)"
        when = self.resets_at.isoformat() if self.resets_at is not None else "n/a"
        return (
            f"costwatch budget {self.budget!r} ({self.window}) {what}: "
            f"${self.spent_usd:.6f} of ${self.limit_usd} ({pct:.1f}%), resets at {when}"
        )

    def to_json(self) -> dict[str, object]:
        """The webhook payload: money as decimal strings, times as ISO 8601 UTC."""
        return {
            "budget": self.budget,
            "kind": self.kind,
            "threshold": self.threshold,
            "spent_usd": str(self.spent_usd),
            "limit_usd": str(self.limit_usd),
            "window": self.window,
            "window_id": self.window_id,
            "resets_at": self.resets_at.isoformat() if self.resets_at is not None else None,
            "action": self.action,
            "service": self.service,
            "fired_at": self.fired_at.isoformat(),
            "message": self.message,
        }


AlertCallback = Callable[[BudgetAlert], object]

T = TypeVar("T")


class _AlertQueue(Generic[T]):
    """A bounded queue worked off by one daemon thread, started on first use (again in a forked
    child): a full queue drops (and counts) an alert instead of waiting."""

    _thread_name: ClassVar[str]
    _what: ClassVar[str]
    """What is queued, for the log line of a dropped alert."""

    def __init__(self, max_queued: int) -> None:
        self._queue: queue.Queue[T] = queue.Queue(max_queued)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.dropped = 0

    def _work(self) -> None:
        raise NotImplementedError

    def _put(self, item: T, budget: str) -> None:
        thread = self._thread
        if thread is None or not thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(
                        target=self._work, name=self._thread_name, daemon=True
                    )
                    self._thread.start()
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            logger.warning("costwatch %s queue full: alert for %r dropped", self._what, budget)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything queued was done with (delivered, given up on, returned or timed
        out); False on timeout."""
        return _drained(self._queue, timeout_s)

    def after_fork_in_child(self) -> None:
        """What was queued before the fork is the parent's to do."""
        self._lock = threading.Lock()
        self._queue = queue.Queue(self._queue.maxsize)
        self._thread = None


class WebhookSender(_AlertQueue[tuple[str, bytes] | None]):
    """POSTs alerts as JSON from one daemon thread: timeout per attempt, retries with backoff."""

    _thread_name = "costwatch-budget-webhook"
    _what = "budget webhook"

    def __init__(
        self,
        *,
        timeout_s: float = 2.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(1000)
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._sleep = sleep
        self.delivered = 0
        self.failed = 0
        self.on_failure: Callable[[], None] = lambda: None
        """Called (on the webhook thread) for each alert given up on: the settlement worker
        counts it in ``costwatch_internal_errors_total{component="budget_webhook"}``."""

    def send(self, url: str, alert: BudgetAlert) -> None:
        self._put((url, json.dumps(alert.to_json()).encode()), alert.budget)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._deliver(*item)
            finally:
                self._queue.task_done()

    def _deliver(self, url: str, body: bytes) -> None:
        import urllib.request  # only processes that post alerts pay for importing it

        attempts = self.retries + 1
        for attempt in range(attempts):
            try:
                request = urllib.request.Request(
                    url,
                    data=body,
                    method="POST",
                    headers={"Content-Type": "application/json", "User-Agent": "costwatch"},
                )
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    response.read()
                self.delivered += 1
                return
            except OSError as exc:  # URLError, HTTPError, timeouts, refused connections
                if attempt + 1 == attempts:
                    self.failed += 1
                    logger.warning(
                        "costwatch budget webhook failed after %d attempts: %r", attempts, exc
                    )
                    with contextlib.suppress(Exception):
                        self.on_failure()
                    return
                self._sleep(self.backoff_s * (2**attempt))

    def close(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                return


class CallbackRunner(_AlertQueue[tuple[AlertCallback, BudgetAlert]]):
    """Runs the user's alert callbacks on a daemon thread, one at a time, each given at most
    ``timeout_s``: a callback that overruns is left behind on its own (daemon) thread, counted
    in ``timed_out`` and reported to ``on_timeout``, and the next callbacks run on a fresh
    thread.  A full queue drops (and counts) an alert instead of waiting."""

    _thread_name = "costwatch-budget-callbacks"
    _what = "alert callback"

    def __init__(
        self,
        *,
        timeout_s: float = 5.0,
        max_queued: int = 1000,
        on_timeout: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(max_queued)
        self.timeout_s = timeout_s
        self.on_timeout = on_timeout
        self._runner: queue.Queue[tuple[AlertCallback, BudgetAlert, threading.Event]] | None = None
        self.timed_out = 0

    def submit(self, callback: AlertCallback, alert: BudgetAlert) -> None:
        self._put((callback, alert), alert.budget)

    def _work(self) -> None:
        while True:
            callback, alert = self._queue.get()
            try:
                runner = self._runner
                if runner is None:
                    runner = self._runner = queue.Queue()
                    threading.Thread(
                        target=_run_callbacks,
                        args=(runner,),
                        name="costwatch-budget-callback",
                        daemon=True,
                    ).start()
                done = threading.Event()
                runner.put((callback, alert, done))
                if not done.wait(self.timeout_s):
                    self._runner = None  # that thread is stuck: leave it, use a new one
                    self.timed_out += 1
                    logger.warning(
                        "costwatch on_alert callback %r for budget %r did not return within "
                        "%gs: left running on its own thread",
                        getattr(callback, "__qualname__", callback),
                        alert.budget,
                        self.timeout_s,
                    )
                    with contextlib.suppress(Exception):
                        self.on_timeout()
            finally:
                self._queue.task_done()

    def after_fork_in_child(self) -> None:
        super().after_fork_in_child()
        self._runner = None


def _drained(items: queue.Queue[Any], timeout_s: float) -> bool:
    """Wait until every item put on ``items`` was done with; False after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while items.unfinished_tasks:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


def _run_callbacks(inbox: queue.Queue[tuple[AlertCallback, BudgetAlert, threading.Event]]) -> None:
    while True:
        callback, alert, done = inbox.get()
        try:
            callback(alert)
        except Exception as exc:  # the user's callback: never let it stop the others
            logger.warning(
                "costwatch on_alert callback %r for budget %r raised %r",
                getattr(callback, "__qualname__", callback),
                alert.budget,
                exc,
            )
        finally:
            done.set()


def deliver(
    alert: BudgetAlert,
    callbacks: Sequence[AlertCallback],
    webhook_url: str | None,
    webhooks: WebhookSender,
    runner: CallbackRunner,
) -> None:
    """Log the alert, hand each callback to ``runner`` (never run here) and queue the webhook
    POST."""
    logger.warning("%s", alert.message)
    for callback in callbacks:
        runner.submit(callback, alert)
    if webhook_url:
        webhooks.send(webhook_url, alert)


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)

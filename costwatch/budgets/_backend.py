"""Where budget spend lives: a ``BudgetBackend`` protocol and its thread-safe in-memory twin
(Redis is in ``_redis_backend``, its scripts in ``_scripts``).

The data model is the same in both implementations, so the twin is an exact stand-in in tests:

* **spent**: integer nano-dollars per *bucket* (an integer index: the minute or hour of a
  rolling window, the day or month of a calendar window).  The spend of a window is the sum of
  the buckets ``min_bucket <= b <= cur_bucket``; older buckets are pruned lazily.  Two
  bookkeeping fields make the common case O(1): ``t`` (total of the live buckets) and ``m``
  (the oldest live bucket; when it falls behind ``min_bucket`` the hash is rescanned once).
  The hash also holds the budget's *epoch* (``e``, see ``_scripts``): none of it expires.
* **holds** (reservations): an amount per reservation id plus an expiry, and their running
  total.  Expired holds are pruned on every reservation, so a process that dies after reserving
  frees the budget once its holds expire (``reservation_ttl_s``, by Redis's clock).
* **alert claims**: one key per (window id, threshold); claiming it is what makes an alert fire
  once per window across processes.

Requests carry the caller's ``now_ms``; the Redis backend ignores it and reads ``TIME`` in the
script unless it was built with ``server_time=False`` (tests with an injected clock).  Every
result says which moment it used (``now_ms``).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from costwatch.budgets._window import Window

BUDGET_INDEX_KEY = "cw:budgets"
"""Hash ``name -> JSON definition`` of every registered budget (``costwatch budget status``)."""


class ProcessIds:
    """Ids unique across processes and forks: the pid, a random tag, then a counter."""

    def __init__(self) -> None:
        self._pid = 0
        self._prefix = ""
        self._count = itertools.count()

    def new(self) -> str:
        pid = os.getpid()
        if pid != self._pid:
            self._pid = pid
            self._prefix = f"{pid:x}.{os.urandom(4).hex()}."
            self._count = itertools.count()
        return self._prefix + str(next(self._count))


class BackendUnavailable(Exception):
    """The budget store could not be reached (connection refused, timeout, circuit open)."""


class BudgetKeys:
    """Names of one budget's Redis keys, computed once at registration.  They share one hash
    tag, so a Redis Cluster keeps them in one slot and every script on them is atomic."""

    __slots__ = ("name", "spent", "holds", "amounts", "alert_prefix", "writer_prefix")

    def __init__(self, name: str) -> None:
        tag = "{cw:b:" + name + "}"
        self.name = name
        self.spent = tag + ":spent"
        self.holds = tag + ":holds"
        self.amounts = tag + ":holdamt"
        self.alert_prefix = tag + ":alert:"
        self.writer_prefix = tag + ":applied:"


@dataclass(slots=True)
class ReserveRequest:
    """Hold ``amount`` nano-dollars against a budget unless that would pass ``limit``."""

    keys: BudgetKeys
    window: Window
    now_ms: int
    limit: int
    amount: int
    hold_id: str
    hold_ms: int
    """The hold expires this long after the reservation unless settled first."""
    enforce: bool
    """``True``: refuse the hold when over the limit (``block``); ``False``: hold and report."""
    epoch: str
    """The budget state's epoch this process last saw ('' before its first reservation)."""
    deny_lost: bool
    """Refuse while the window still counts from a moment its state was lost."""


@dataclass(slots=True)
class ReserveResult:
    granted: bool
    over: bool
    """spent + held + amount > limit (or the budget is already used up)."""
    spent: int
    reserved: int
    """Held by other calls before this one."""
    oldest_bucket: int
    """Oldest bucket with spend, -1 when the window is empty."""
    now_ms: int
    epoch: str
    lost: int
    """0: state intact; 1: this reservation found it lost (reported once, fleet-wide); 2: the
    window still reaches back to a loss found earlier."""


@dataclass(slots=True)
class Settlement:
    """A batch for one budget: release the holds ``hold_ids`` and charge ``cost`` nano-dollars
    (the sum of the batch's actual costs) to the bucket of ``age_ms`` ago.

    Idempotent however late it is retried: a ``writer`` (one process) numbers its batches
    (``seq``, growing) and sends them in that order, retries first, so the store keeps the last
    number it applied per writer and budget, and a batch at or below it (a retry after a timeout
    that left it unknown whether Redis ran it) is applied once.  A writer's number is kept
    ``writer_ttl_s`` seconds after its last batch.
    """

    keys: BudgetKeys
    window: Window
    writer: str
    seq: int
    hold_ids: list[str]
    cost: int
    now_ms: int
    age_ms: int
    writer_ttl_s: int = 86_400


@dataclass(slots=True)
class SettleResult:
    spent: int
    """Window spend after the settlement."""
    reserved: int
    oldest_bucket: int
    duplicate: bool
    now_ms: int


@dataclass(slots=True)
class BudgetReading:
    spent: int
    reserved: int
    oldest_bucket: int
    holds: int
    now_ms: int


class BudgetBackend(Protocol):
    """Shared budget state.  Implementations are thread-safe."""

    def reserve(self, requests: Sequence[ReserveRequest]) -> list[ReserveResult]:
        """All requests in one round trip; raises ``BackendUnavailable``."""
        ...

    def settle(self, settlements: Sequence[Settlement]) -> list[SettleResult]:
        """Apply in one round trip (idempotent per writer and ``seq``); raises
        ``BackendUnavailable``."""
        ...

    def read(self, keys: BudgetKeys, window: Window, now_ms: int) -> BudgetReading: ...

    def claim_alert(
        self, keys: BudgetKeys, claim: str, now_ms: int, dedupe_ms: int, ttl_s: int
    ) -> bool:
        """True exactly once per claim (or once per ``dedupe_ms`` when it is >= 0)."""
        ...

    def register(self, name: str, definition_json: str) -> None: ...

    def definitions(self) -> dict[str, str]: ...

    def asyncio(self) -> AsyncBudgetBackend:
        """The twin that reserves without blocking an event loop."""
        ...

    def close(self) -> None: ...

    def after_fork_in_child(self) -> None:
        """Drop connections inherited from the parent (never shared across processes)."""
        ...


class AsyncBudgetBackend(Protocol):
    async def reserve(self, requests: Sequence[ReserveRequest]) -> list[ReserveResult]: ...


# --------------------------------------------------------------------------- in-memory twin


class _MemoryBudget:
    """One budget's state in the in-memory twin (the caller holds the backend's lock)."""

    __slots__ = ("buckets", "holds", "held", "applied", "alerts")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.holds: dict[str, tuple[int, int]] = {}
        self.held = 0
        self.applied: dict[str, int] = {}
        """The last batch number applied, by writer."""
        self.alerts: dict[str, int] = {}

    def prune_holds(self, now_ms: int) -> None:
        expired = [hid for hid, (_, exp) in self.holds.items() if exp <= now_ms]
        for hid in expired:
            self.held -= self.holds.pop(hid)[0]

    def window(self, min_bucket: int) -> tuple[int, int]:
        stale = [b for b in self.buckets if b < min_bucket]
        for b in stale:
            del self.buckets[b]
        if not self.buckets:
            return 0, -1
        return sum(self.buckets.values()), min(self.buckets)

    def settle(self, item: Settlement) -> SettleResult:
        """The settlement script's work: release the batch's holds and charge its cost, once
        per writer and batch number."""
        position = item.window.locate(item.now_ms / 1000)
        duplicate = item.seq <= self.applied.get(item.writer, 0)
        if not duplicate:
            self.applied[item.writer] = item.seq
            for hold_id in item.hold_ids:
                hold = self.holds.pop(hold_id, None)
                if hold is not None:
                    self.held -= hold[0]
            bucket = item.window.locate((item.now_ms - item.age_ms) / 1000).cur
            if item.cost > 0 and bucket >= position.min:
                self.buckets[bucket] = self.buckets.get(bucket, 0) + item.cost
        spent, oldest = self.window(position.min)
        return SettleResult(spent, self.held, oldest, duplicate, item.now_ms)


_MEMORY_EPOCH = "memory"


class MemoryBudgetBackend:
    """The in-process twin of ``RedisBudgetBackend`` (one process, same semantics; its state
    lives as long as the process, so it is never lost)."""

    server_time = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._budgets: dict[str, _MemoryBudget] = {}
        self._definitions: dict[str, str] = {}

    def _state(self, keys: BudgetKeys) -> _MemoryBudget:
        state = self._budgets.get(keys.name)
        if state is None:
            state = self._budgets[keys.name] = _MemoryBudget()
        return state

    def reserve(self, requests: Sequence[ReserveRequest]) -> list[ReserveResult]:
        # The reservation script's work, inline: it runs on the host's call path (a method
        # of _MemoryBudget per request, as settle has, costs ~0.3 us a call).
        results = []
        with self._lock:
            for req in requests:
                state = self._state(req.keys)
                state.prune_holds(req.now_ms)
                spent, oldest = state.window(req.window.locate(req.now_ms / 1000).min)
                reserved = state.held
                over = spent + reserved + req.amount > req.limit or spent + reserved >= req.limit
                granted = not (over and req.enforce)
                if granted and req.amount > 0 and req.hold_id not in state.holds:  # held once
                    state.holds[req.hold_id] = (req.amount, req.now_ms + req.hold_ms)
                    state.held += req.amount
                results.append(
                    ReserveResult(
                        granted, over, spent, reserved, oldest, req.now_ms, _MEMORY_EPOCH, 0
                    )
                )
        return results

    def settle(self, settlements: Sequence[Settlement]) -> list[SettleResult]:
        with self._lock:
            return [self._state(item.keys).settle(item) for item in settlements]

    def read(self, keys: BudgetKeys, window: Window, now_ms: int) -> BudgetReading:
        with self._lock:
            state = self._state(keys)
            state.prune_holds(now_ms)
            spent, oldest = state.window(window.locate(now_ms / 1000).min)
            return BudgetReading(spent, state.held, oldest, len(state.holds), now_ms)

    def claim_alert(
        self, keys: BudgetKeys, claim: str, now_ms: int, dedupe_ms: int, ttl_s: int
    ) -> bool:
        with self._lock:
            alerts = self._state(keys).alerts
            fired = alerts.get(claim)
            if fired is not None and (dedupe_ms < 0 or now_ms - fired < dedupe_ms):
                return False
            alerts[claim] = now_ms
            return True

    def register(self, name: str, definition_json: str) -> None:
        with self._lock:
            self._definitions[name] = definition_json

    def definitions(self) -> dict[str, str]:
        with self._lock:
            return dict(self._definitions)

    def asyncio(self) -> AsyncBudgetBackend:
        return _AsyncMemoryBudgetBackend(self)

    def close(self) -> None:
        return None

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()


class _AsyncMemoryBudgetBackend:
    """The memory twin never waits on I/O: its async face calls the sync one."""

    __slots__ = ("_sync",)

    def __init__(self, sync: MemoryBudgetBackend) -> None:
        self._sync = sync

    async def reserve(self, requests: Sequence[ReserveRequest]) -> list[ReserveResult]:
        return self._sync.reserve(requests)

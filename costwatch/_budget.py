"""Budgets: windows, matching, pre-flight reservations, settlement and threshold alerts.

``costwatch.budget(...)`` registers a :class:`Budget` in the runtime's :class:`BudgetRegistry`.
Before a matching call the recorder asks the registry to :meth:`~BudgetRegistry.reserve` the
call's worst-case cost (one backend round trip for all matching budgets); a ``block`` budget
that would go over its limit raises :class:`costwatch.BudgetExceeded` before the provider is
called.  After the call the recorder settles the reservation to the actual cost: the settlement
is queued and a background thread applies it (pipelined), so the host's call path pays exactly
one round trip.  Threshold alerts, the budget gauges and webhook posts also happen off the path.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import re
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal, InvalidOperation
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Literal, Protocol

from costwatch._budget_alerts import (
    AlertCallback,
    AlertKind,
    BudgetAlert,
    WebhookSender,
    deliver,
    logger,
    utc,
)
from costwatch._budget_backend import (
    BackendUnavailable,
    BudgetBackend,
    BudgetKeys,
    MemoryBudgetBackend,
    RedisBudgetBackend,
    ReserveRequest,
    ReserveResult,
    Settlement,
)
from costwatch._errors import BudgetExceeded, ConfigError
from costwatch._failopen import errors
from costwatch._record import TokenUsage

if TYPE_CHECKING:
    from costwatch._sink import Sink

Action = Literal["warn", "block"]
BackendPolicy = Literal["allow", "deny"]

NANO = Decimal(10**9)
MAX_LIMIT_USD = Decimal(9_000_000)
"""Redis Lua numbers are doubles: nano-dollar sums are exact below 2**53 (~$9.007M)."""

ROLLING_BUCKETS = 60
"""A rolling window is summed over 60 sub-windows: it slides in steps of 1/60 of its length."""

MATCH_DIMENSIONS = ("provider", "model", "stage", "strategy")
"""Call attributes ``match`` can select on; any other key is looked up in the call's tags
(``team``, ``feature``, ``tenant`` and whatever else ``costwatch.tags`` set)."""

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_ROLLING_RE = re.compile(r"^([1-9][0-9]{0,4})([mhd])$")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400}
_CALENDAR = ("day", "month")
_DONE_TTL_S = 600
"""How long a settlement batch id is remembered, so a retried batch is not charged twice."""


def to_nano(value: Decimal) -> int:
    """Dollars to integer nano-dollars, rounding half to even (charges)."""
    return int((value * NANO).to_integral_value(rounding=ROUND_HALF_EVEN))


def to_nano_ceiling(value: Decimal) -> int:
    """Dollars to integer nano-dollars, rounding up (reservations never under-hold)."""
    return int((value * NANO).to_integral_value(rounding=ROUND_CEILING))


def from_nano(value: int) -> Decimal:
    return Decimal(value).scaleb(-9)


# --------------------------------------------------------------------------- windows


class WindowPosition:
    """Where ``now`` falls in a window: valid for every ``now`` in ``[start, end)``."""

    __slots__ = ("cur", "min", "start", "end", "window_id")

    def __init__(self, cur: int, min_bucket: int, start: float, end: float, window_id: str) -> None:
        self.cur = cur
        self.min = min_bucket
        self.start = start
        self.end = end
        self.window_id = window_id


class Window:
    """A rolling window (``"1h"``, ``"24h"``, ``"1d"``, ``"7d"``, any ``<n>m|h|d``) or a
    calendar window in UTC (``"day"``, ``"month"``).

    Rolling windows are the sum of 60 sub-window buckets (``"1h"``: one-minute buckets), so the
    spend counted is that of the last 59-60 sub-windows.  Calendar windows have one bucket per
    UTC day or month and reset at its end.
    """

    __slots__ = ("spec", "kind", "seconds", "bucket_s", "buckets", "_cached")

    def __init__(self, spec: str) -> None:
        if not isinstance(spec, str):
            raise ConfigError("window", spec, 'expected "1h", "24h", "7d", "day" or "month"')
        self.spec = spec
        self._cached: WindowPosition | None = None
        if spec in _CALENDAR:
            self.kind = "calendar"
            self.seconds = 86400 if spec == "day" else 31 * 86400
            self.bucket_s = self.seconds
            self.buckets = 1
            return
        found = _ROLLING_RE.match(spec)
        if found is None:
            raise ConfigError(
                "window",
                spec,
                'expected a rolling window like "1h", "24h", "7d" (minutes m, hours h, days d) '
                'or a calendar window "day" or "month" (UTC)',
            )
        seconds = int(found.group(1)) * _UNIT_S[found.group(2)]
        if seconds > 400 * 86400:
            raise ConfigError("window", spec, "rolling windows are limited to 400 days")
        self.kind = "rolling"
        self.seconds = seconds
        self.bucket_s = seconds // ROLLING_BUCKETS
        self.buckets = ROLLING_BUCKETS

    def locate(self, now: float) -> WindowPosition:
        cached = self._cached
        if cached is not None and cached.start <= now < cached.end:
            return cached
        position = self._compute(now)
        self._cached = position
        return position

    def _compute(self, now: float) -> WindowPosition:
        if self.kind == "rolling":
            cur = int(now // self.bucket_s)
            start = float(cur * self.bucket_s)
            return WindowPosition(
                cur, cur - self.buckets + 1, start, start + self.bucket_s, self.spec
            )
        if self.spec == "day":
            cur = int(now // 86400)
            start = float(cur * 86400)
            day = datetime.fromtimestamp(start, UTC).date().isoformat()
            return WindowPosition(cur, cur, start, start + 86400, day)
        moment = datetime.fromtimestamp(now, UTC)
        first = datetime(moment.year, moment.month, 1, tzinfo=UTC)
        if moment.month == 12:
            following = datetime(moment.year + 1, 1, 1, tzinfo=UTC)
        else:
            following = datetime(moment.year, moment.month + 1, 1, tzinfo=UTC)
        cur = moment.year * 12 + moment.month - 1
        return WindowPosition(
            cur,
            cur,
            first.timestamp(),
            following.timestamp(),
            f"{moment.year:04d}-{moment.month:02d}",
        )

    def resets_at(self, position: WindowPosition, oldest_bucket: int) -> float | None:
        """Calendar: the end of the period.  Rolling: when the oldest counted spend ages out
        (``None`` when nothing is counted)."""
        if self.kind == "calendar":
            return position.end
        if oldest_bucket < 0:
            return None
        return float((oldest_bucket + self.buckets) * self.bucket_s)

    def spent_ttl_s(self, position: WindowPosition, now: float) -> int:
        """How long the spend hash must live after a write: the spend expires with the window."""
        if self.kind == "rolling":
            return self.seconds + self.bucket_s + 60
        return max(60, int(position.end - now) + 3600)

    def claim(self, position: WindowPosition, label: str, now: float) -> tuple[str, int, int]:
        """(claim key, dedupe ms, key ttl s) making an alert fire once per window.

        Calendar windows: once per period (the key names the period).  Rolling windows have no
        periods: an alert fires at most once per window length.
        """
        if self.kind == "calendar":
            return f"{position.window_id}:{label}", -1, max(60, int(position.end - now) + 86400)
        return f"{self.spec}:{label}", self.seconds * 1000, self.seconds + 3600


# --------------------------------------------------------------------------- calls and budgets


class PriceLike(Protocol):
    """What budgets need of ``costwatch._pricing.Price``."""

    def cost(self, usage: TokenUsage) -> Decimal: ...


@dataclass(slots=True)
class BudgetCall:
    """One call as budgets see it: its dimensions, tags and what it could cost at most."""

    provider: str
    model: str
    stage: str
    strategy: str
    tags: Mapping[str, str]
    price: PriceLike | None
    prompt_tokens: int
    max_output_tokens: int | None
    fixed_cost_usd: Decimal | None = None
    """A fixed per-call price (retrievals, reranker searches) instead of token prices."""


_FEMTO = Decimal(10**15)
_femto_cache: dict[int, tuple[object, tuple[int, int, int] | None]] = {}


def _femto_prices(price: PriceLike) -> tuple[int, int, int] | None:
    """(input, output, per-request) prices in integer femto-dollars, when that is exact and the
    price has no long-context tiers; else None (use ``Price.cost``).  Memoised per object."""
    entry = _femto_cache.get(id(price))
    if entry is not None and entry[0] is price:
        return entry[1]
    exact: tuple[int, int, int] | None = None
    try:
        if not getattr(price, "tiers", ()):
            values = [
                Decimal(getattr(price, "input")) * _FEMTO,  # noqa: B009 - PriceLike has no fields
                Decimal(getattr(price, "output")) * _FEMTO,  # noqa: B009
                Decimal(getattr(price, "per_request", 0)) * _FEMTO,
            ]
            if all(v == v.to_integral_value() for v in values):
                exact = (int(values[0]), int(values[1]), int(values[2]))
    except (AttributeError, TypeError, ArithmeticError):
        exact = None
    if len(_femto_cache) > 4096:
        _femto_cache.clear()
    _femto_cache[id(price)] = (price, exact)
    return exact


_Matcher = tuple[str, bool, frozenset[str], tuple[str, ...]]


def _compile_match(match: Mapping[str, object] | None) -> tuple[_Matcher, ...]:
    if match is None:
        return ()
    if not isinstance(match, Mapping):
        raise ConfigError("match", match, "expected a mapping like {'team': 'support'}")
    matchers: list[_Matcher] = []
    for key, raw in match.items():
        if not isinstance(key, str) or not key:
            raise ConfigError("match", key, "keys must be non-empty strings")
        values: Iterable[object] = (raw,) if isinstance(raw, str) else _iterable(key, raw)
        allowed = []
        for value in values:
            if not isinstance(value, str) or not value:
                raise ConfigError(f"match.{key}", raw, "values must be non-empty strings")
            allowed.append(value)
        if not allowed:
            raise ConfigError(f"match.{key}", raw, "needs at least one value")
        patterns = tuple(v for v in allowed if any(ch in v for ch in "*?["))
        exact = frozenset(v for v in allowed if v not in patterns)
        matchers.append((key, key in MATCH_DIMENSIONS, exact, patterns))
    return tuple(matchers)


def _iterable(key: str, raw: object) -> Iterable[object]:
    if isinstance(raw, (list, tuple, set, frozenset)):
        return raw
    raise ConfigError(f"match.{key}", raw, "expected a string or a list of strings")


def _callbacks(
    on_alert: AlertCallback | Sequence[AlertCallback] | None,
) -> tuple[AlertCallback, ...]:
    if on_alert is None:
        return ()
    if callable(on_alert):
        return (on_alert,)
    if isinstance(on_alert, (list, tuple)):
        for callback in on_alert:
            if not callable(callback):
                raise ConfigError("on_alert", callback, "expected a callable")
        return tuple(on_alert)
    raise ConfigError("on_alert", on_alert, "expected a callable or a list of callables")


def _limit(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise ConfigError("limit_usd", value, "expected a number of US dollars")
    try:
        limit = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise ConfigError("limit_usd", value, "expected a number of US dollars") from None
    if not limit.is_finite() or limit < 0:
        raise ConfigError("limit_usd", value, "must be a finite amount >= 0")
    if limit > MAX_LIMIT_USD:
        raise ConfigError("limit_usd", value, f"must be at most {MAX_LIMIT_USD} per window")
    return limit


def _thresholds(value: object) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError("thresholds", value, "expected a list of fractions like (0.5, 0.8, 1.0)")
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (int, float, Decimal)):
            raise ConfigError("thresholds", value, f"{item!r} is not a number")
        fraction = float(item)
        if not 0 < fraction <= 10:
            raise ConfigError("thresholds", value, f"{item!r} must be in (0, 10]")
        out.append(fraction)
    return tuple(sorted(set(out)))


class Budget:
    """A spending limit over a window for the calls that ``match`` selects."""

    def __init__(
        self,
        name: str,
        limit_usd: Decimal | float | int | str,
        window: str,
        *,
        match: Mapping[str, str | Sequence[str]] | None = None,
        action: Action = "warn",
        thresholds: Sequence[float] = (0.5, 0.8, 1.0),
        on_alert: AlertCallback | Sequence[AlertCallback] | None = None,
        on_backend_error: BackendPolicy = "allow",
        webhook_url: str | None = None,
        default_max_output_tokens: int = 4096,
        reservation_ttl_s: float = 600.0,
    ) -> None:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ConfigError(
                "name", name, "1-128 characters from letters, digits and _ . : - (no braces)"
            )
        if action not in ("warn", "block"):
            raise ConfigError("action", action, 'expected "warn" or "block"')
        if on_backend_error not in ("allow", "deny"):
            raise ConfigError("on_backend_error", on_backend_error, 'expected "allow" or "deny"')
        if webhook_url is not None and (
            not isinstance(webhook_url, str) or not webhook_url.startswith(("http://", "https://"))
        ):
            raise ConfigError("webhook_url", webhook_url, "expected an http:// or https:// URL")
        if (
            isinstance(default_max_output_tokens, bool)
            or not isinstance(default_max_output_tokens, int)
            or default_max_output_tokens < 0
        ):
            raise ConfigError(
                "default_max_output_tokens", default_max_output_tokens, "expected an int >= 0"
            )
        if (
            isinstance(reservation_ttl_s, bool)
            or not isinstance(reservation_ttl_s, (int, float))
            or not 1 <= reservation_ttl_s <= 86400
        ):
            raise ConfigError("reservation_ttl_s", reservation_ttl_s, "expected 1 to 86400 seconds")
        self.name = name
        self.limit_usd = _limit(limit_usd)
        self.window = Window(window)
        self.match: dict[str, tuple[str, ...]] = {}
        self._matchers = _compile_match(match)
        for key, _, exact, patterns in self._matchers:
            self.match[key] = tuple(sorted(exact)) + patterns
        self.action: Action = action
        self.thresholds = _thresholds(thresholds)
        self.on_alert = _callbacks(on_alert)
        self.on_backend_error: BackendPolicy = on_backend_error
        self.webhook_url = webhook_url
        self.default_max_output_tokens = default_max_output_tokens
        self.reservation_ttl_s = float(reservation_ttl_s)
        self.keys = BudgetKeys(name)
        self.limit_nano = to_nano(self.limit_usd)
        self.enforce = action == "block"
        self.hold_ms = int(self.reservation_ttl_s * 1000)
        self.hold_key_ttl_s = int(self.reservation_ttl_s) + 120
        self.threshold_nanos = tuple(
            (t, to_nano_ceiling(self.limit_usd * Decimal(str(t)))) for t in self.thresholds
        )
        self.last_spent_nano = 0
        """Window spend as last read from the backend (what the gauge shows)."""
        self._fired: dict[str, int] = {}
        self._registry: BudgetRegistry | None = None

    def __repr__(self) -> str:
        return (
            f"Budget({self.name!r}, limit_usd={self.limit_usd}, window={self.window.spec!r}, "
            f"action={self.action!r}, match={self.match!r})"
        )

    def matches(self, call: BudgetCall) -> bool:
        for key, is_dimension, exact, patterns in self._matchers:
            value = getattr(call, key) if is_dimension else call.tags.get(key)
            if value is None:
                return False
            if value in exact:
                continue
            if patterns and any(fnmatchcase(value, p) for p in patterns):
                continue
            return False
        return True

    def worst_case_nano(self, call: BudgetCall) -> int:
        """Prompt tokens at the input price plus the output allowance at the output price."""
        if call.fixed_cost_usd is not None:
            return to_nano_ceiling(call.fixed_cost_usd)
        price = call.price
        if price is None:
            return 0
        output = call.max_output_tokens
        if output is None:
            output = self.default_max_output_tokens
        exact = _femto_prices(price)
        if exact is not None:  # integer femto-dollars: the same value as Price.cost, faster
            femto = exact[0] * call.prompt_tokens + exact[1] * output + exact[2]
            return -(-femto // 1_000_000)
        return to_nano_ceiling(price.cost(TokenUsage(input=call.prompt_tokens, output=output)))

    def definition(self, service: str) -> dict[str, object]:
        return {
            "name": self.name,
            "limit_usd": str(self.limit_usd),
            "window": self.window.spec,
            "action": self.action,
            "match": {k: list(v) for k, v in self.match.items()},
            "thresholds": list(self.thresholds),
            "on_backend_error": self.on_backend_error,
            "service": service,
        }

    def status(self) -> BudgetStatus:
        """Current spend, held reservations and reset time (reads the backend)."""
        if self._registry is None:
            raise RuntimeError(f"budget {self.name!r} is not registered")
        return self._registry.status(self.name)


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    name: str
    window: str
    window_id: str
    action: str
    spent_usd: Decimal
    reserved_usd: Decimal
    limit_usd: Decimal
    holds: int
    resets_at: datetime | None

    @property
    def remaining_usd(self) -> Decimal:
        return max(Decimal(0), self.limit_usd - self.spent_usd - self.reserved_usd)


# --------------------------------------------------------------------------- reservations


class Reservation:
    """Worst-case holds made before a call; :meth:`settle` replaces them with the actual cost."""

    __slots__ = ("_registry", "_holds", "_settled")

    def __init__(self, registry: BudgetRegistry, holds: list[tuple[Budget, str]]) -> None:
        self._registry = registry
        self._holds = holds
        self._settled = False

    @property
    def budgets(self) -> tuple[str, ...]:
        return tuple(b.name for b, _ in self._holds)

    def settle(self, actual_cost: Decimal | None) -> None:
        """Queue the settlement (never a round trip on the caller's path).  Idempotent.

        ``None`` (unpriced call) releases the holds and charges nothing.
        """
        if self._settled:
            return
        self._settled = True
        try:
            cost = to_nano(actual_cost) if actual_cost is not None and actual_cost > 0 else 0
            registry = self._registry
            now = registry.clock()
            append = registry.pending.append
            for budget, settle_id in self._holds:
                append(_Settle(budget, settle_id, cost, now))
            registry.wake()
        except Exception as exc:
            errors.report("budget", exc)


class _Settle:
    """One call's settlement: release hold ``hold_id`` (if any) and charge ``cost``."""

    __slots__ = ("budget", "hold_id", "cost", "now")

    def __init__(self, budget: Budget, hold_id: str, cost: int, now: float) -> None:
        self.budget = budget
        self.hold_id = hold_id
        self.cost = cost
        self.now = now


class _Group:
    """Settlements of one budget and bucket, sent as one idempotent batch.  A batch that met
    an unreachable backend is retried as it is, with the same batch id."""

    __slots__ = ("budget", "settlement", "now")

    def __init__(self, budget: Budget, settlement: Settlement, now: float) -> None:
        self.budget = budget
        self.settlement = settlement
        self.now = now


class _Retry(Exception):
    def __init__(self, items: list[_Pending]) -> None:
        super().__init__("budget backend unavailable")
        self.items = items


class _Event:
    """An alert-worthy moment seen on the call path (warn budget exceeded, call blocked)."""

    __slots__ = ("budget", "kind", "spent", "oldest", "now")

    def __init__(
        self, budget: Budget, kind: AlertKind, spent: int, oldest: int, now: float
    ) -> None:
        self.budget = budget
        self.kind = kind
        self.spent = spent
        self.oldest = oldest
        self.now = now


class _Register:
    __slots__ = ("budget", "now")

    def __init__(self, budget: Budget, now: float) -> None:
        self.budget = budget
        self.now = now


_Pending = _Settle | _Group | _Event | _Register


# --------------------------------------------------------------------------- registry


class BudgetRegistry:
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
        self.pending: deque[_Pending] = deque()
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
        self.pending.append(_Register(budget, self.clock()))
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
                    _Event(
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
            self.pending.append(_Settle(other, settle_id, 0, now))
        self.pending.append(_Event(budget, "blocked", result.spent, result.oldest_bucket, now))
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
                self.pending.append(_Settle(budget, "", nano, now))
            self.wake()
        except Exception as exc:
            errors.report("budget", exc)

    def _next_id(self) -> str:
        pid = os.getpid()
        if pid != self._ids_pid:
            self._ids_pid = pid
            self._id_prefix = f"{pid:x}.{os.urandom(4).hex()}."
            self._ids = itertools.count()
        return self._id_prefix + str(next(self._ids))

    # -- background settlement -------------------------------------------------------------

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
                batch: list[_Pending] = []
                while pending and len(batch) < 1000:
                    batch.append(pending.popleft())
                try:
                    self._apply(batch)
                except _Retry as retry:
                    self._requeue(retry.items)
                    return False
                except Exception as exc:
                    errors.report("budget", exc)
        return True

    def _requeue(self, items: list[_Pending]) -> None:
        self.pending.extendleft(reversed(items))
        excess = len(self.pending) - self._max_pending
        if excess > 0:
            for _ in range(excess):
                self.pending.pop()
            self.dropped_settlements += excess
            logger.warning(
                "costwatch budget backend unreachable: %d queued settlements dropped", excess
            )

    def _group(self, batch: list[_Pending]) -> list[_Group]:
        """One batch per budget and bucket: the holds to release and the summed cost."""
        groups = [item for item in batch if isinstance(item, _Group)]
        fresh: dict[tuple[int, int], _Group] = {}
        for item in batch:
            if not isinstance(item, _Settle):
                continue
            budget = item.budget
            position = budget.window.locate(item.now)
            key = (id(budget), position.cur)
            group = fresh.get(key)
            if group is None:
                settlement = Settlement(
                    budget.keys,
                    self._next_id(),
                    [],
                    0,
                    position.cur,
                    position.min,
                    budget.window.spent_ttl_s(position, item.now),
                    _DONE_TTL_S,
                )
                group = fresh[key] = _Group(budget, settlement, item.now)
                groups.append(group)
            if item.hold_id:
                group.settlement.hold_ids.append(item.hold_id)
            group.settlement.cost += item.cost
            if item.now > group.now:
                group.now = item.now
        return groups

    def _apply(self, batch: list[_Pending]) -> None:
        """Settle (one pipelined round trip), publish the gauges, then alert.

        Raises ``_Retry`` with what still has to be done when the backend is unreachable;
        settlement batches are idempotent, so retrying one that did reach Redis is safe.
        """
        backend = self.backend
        groups = self._group(batch)
        registers = [item for item in batch if isinstance(item, _Register)]
        events = [item for item in batch if isinstance(item, _Event)]
        readings: dict[int, tuple[Budget, int, int, float]] = {}
        if groups:
            try:
                results = backend.settle([group.settlement for group in groups])
            except BackendUnavailable:
                raise _Retry([*groups, *registers, *events]) from None
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
                raise _Retry([*registers[i:], *events]) from None
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
                raise _Retry(list(events[i:])) from None

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

    def _after_fork_in_child(self) -> None:
        """Locks may have been held by the parent's threads: start clean.  Settlements queued
        before the fork belong to the parent, which applies them."""
        self._lock = threading.Lock()
        self._drain_lock = threading.Lock()
        self._event = threading.Event()
        self.pending = deque()
        self._thread = None
        self._thread_pid = 0


def _flush_at_exit(ref: weakref.ref[BudgetRegistry]) -> None:
    """Settlements still queued when the interpreter exits are applied (bounded wait)."""
    registry = ref()
    if registry is not None and registry.pending and not registry._closed:
        try:
            registry.flush(timeout_s=2.0)
        except Exception as exc:
            errors.report("budget", exc)


def _after_fork(ref: weakref.ref[BudgetRegistry]) -> None:
    registry = ref()
    if registry is not None:
        registry._after_fork_in_child()


# --------------------------------------------------------------------------- public API


def budget(
    name: str,
    limit_usd: Decimal | float | int | str,
    window: str,
    *,
    match: Mapping[str, str | Sequence[str]] | None = None,
    action: Action = "warn",
    thresholds: Sequence[float] = (0.5, 0.8, 1.0),
    on_alert: AlertCallback | Sequence[AlertCallback] | None = None,
    on_backend_error: BackendPolicy = "allow",
    webhook_url: str | None = None,
    default_max_output_tokens: int = 4096,
    reservation_ttl_s: float = 600.0,
) -> Budget:
    """Register a budget: ``limit_usd`` per ``window`` for the calls ``match`` selects.

    ``window``: rolling ``"1h"``, ``"24h"``/``"1d"``, ``"7d"`` (any ``<n>m|h|d``) or calendar
    UTC ``"day"``/``"month"``.  ``match`` keys: ``provider``, ``model`` (globs allowed),
    ``stage``, ``strategy`` and any tag (``team``, ``feature``, ``tenant``...); a value may be a
    list (any of).  ``action="block"`` raises :class:`costwatch.BudgetExceeded` before a call
    whose worst-case cost (prompt tokens + ``max_tokens``, else ``default_max_output_tokens``)
    would pass the limit; ``"warn"`` alerts and lets it through.  ``thresholds`` fire once per
    window (across processes with Redis) to ``on_alert``, the log and ``webhook_url``.
    With ``configure(redis_url=...)`` spend is shared by every process through Redis;
    ``on_backend_error`` says what to do while Redis is unreachable.
    """
    from costwatch._runtime import runtime

    new = Budget(
        name,
        limit_usd,
        window,
        match=match,
        action=action,
        thresholds=thresholds,
        on_alert=on_alert,
        on_backend_error=on_backend_error,
        webhook_url=webhook_url,
        default_max_output_tokens=default_max_output_tokens,
        reservation_ttl_s=reservation_ttl_s,
    )
    rt = runtime()
    registry = rt.budgets
    if not registry.has_backend:
        if rt.redis_url:
            registry.use_backend(
                RedisBudgetBackend.from_url(rt.redis_url, timeout_s=rt.settings.redis_timeout_s)
            )
        else:
            registry.use_backend(MemoryBudgetBackend())
    registry.service = rt.settings.service
    return registry.add(new)


def budget_status(
    redis_url: str | None, *, now: float | None = None, timeout_s: float = 2.0
) -> str:
    """The text of ``costwatch budget status``: every budget registered in Redis with its
    window, spent, reserved (held by calls in flight), limit and reset time."""
    if not redis_url:
        return (
            "costwatch: no Redis configured (set COSTWATCH_REDIS_URL or pass --redis-url); "
            "budgets are shared, and listed, only through Redis."
        )
    where = _redact(redis_url)
    try:
        backend = RedisBudgetBackend.from_url(redis_url, timeout_s=timeout_s)
    except ValueError as exc:
        return f"costwatch: invalid Redis URL {where}: {exc}"
    try:
        definitions = backend.definitions()
        if not definitions:
            return f"costwatch: no budgets are configured in Redis at {where}."
        moment = time.time() if now is None else now
        rows = [
            _status_row(name, raw, backend, moment) for name, raw in sorted(definitions.items())
        ]
    except BackendUnavailable as exc:
        return f"costwatch: Redis at {where} is unreachable: {exc}"
    finally:
        backend.close()
    header = ("BUDGET", "WINDOW", "ACTION", "SPENT", "RESERVED", "LIMIT", "USED", "RESETS AT (UTC)")
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]
    return "\n".join(lines)


def _status_row(name: str, raw: str, backend: RedisBudgetBackend, now: float) -> tuple[str, ...]:
    try:
        definition = json.loads(raw)
        window = Window(str(definition["window"]))
        limit = Decimal(str(definition["limit_usd"]))
        action = str(definition.get("action", "warn"))
    except (ValueError, KeyError, TypeError, ConfigError, InvalidOperation):
        return (name, "?", "?", "?", "?", "?", "?", "unreadable definition")
    position = window.locate(now)
    reading = backend.read(BudgetKeys(name), int(now * 1000), position.min)
    resets = window.resets_at(position, reading.oldest_bucket)
    spent = from_nano(reading.spent)
    used = f"{spent / limit * 100:.1f}%" if limit else "-"
    return (
        name,
        window.spec,
        action,
        f"${spent:.6f}",
        f"${from_nano(reading.reserved):.6f}",
        f"${limit}",
        used,
        utc(resets).strftime("%Y-%m-%d %H:%M:%S") if resets is not None else "-",
    )


def _redact(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)

"""Budgets: windows, matching, pre-flight reservations, settlement and threshold alerts.

``costwatch.budget(...)`` registers a :class:`Budget` in the runtime's :class:`BudgetRegistry`.
Before a matching call the recorder asks the registry to :meth:`~BudgetRegistry.reserve` the
call's worst-case cost (one backend round trip for all matching budgets); a ``block`` budget
that would go over its limit raises :class:`costwatch.BudgetExceeded` before the provider is
called.  After the call the recorder settles the reservation to the actual cost: the settlement
is queued and a background thread applies it (pipelined), so the host's call path pays at most
one round trip (none for a call known to cost $0; async calls await it without blocking).
Threshold alerts, the budget gauges and webhook posts also happen off the path.

The parts: amounts in ``_money``, windows in ``_window``, calls and ``match=`` selectors in
``_match``, ``Budget`` and ``BudgetStatus`` in ``_definition``, alerts and the callback runner
in ``_alerts``, the queued work and ``Reservation`` in ``_queue``, the backend protocol and its
memory twin in ``_backend``, Redis in ``_redis_backend`` with its scripts in ``_scripts``,
``BudgetRegistry`` and its call path (sync and async) in ``_registry``, the settlement worker
it owns in ``_settle``.  This module keeps the public ``budget()``, the text of ``costwatch
budget status`` and the names other modules import from it.
"""

from __future__ import annotations

import inspect
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ParamSpec

from costwatch._core.errors import ConfigError
from costwatch._core.money import format_usd
from costwatch.budgets._alerts import utc
from costwatch.budgets._backend import BackendUnavailable, BudgetKeys, MemoryBudgetBackend
from costwatch.budgets._definition import Action as Action
from costwatch.budgets._definition import BackendPolicy as BackendPolicy
from costwatch.budgets._definition import Budget as Budget
from costwatch.budgets._definition import BudgetStatus as BudgetStatus
from costwatch.budgets._definition import StateLostPolicy as StateLostPolicy
from costwatch.budgets._match import MATCH_DIMENSIONS as MATCH_DIMENSIONS
from costwatch.budgets._match import BudgetCall as BudgetCall
from costwatch.budgets._match import PriceLike as PriceLike
from costwatch.budgets._money import MAX_LIMIT_USD as MAX_LIMIT_USD
from costwatch.budgets._money import NANO as NANO
from costwatch.budgets._money import from_nano as from_nano
from costwatch.budgets._money import to_nano as to_nano
from costwatch.budgets._money import to_nano_ceiling as to_nano_ceiling
from costwatch.budgets._queue import Reservation as Reservation
from costwatch.budgets._redis_backend import RedisBudgetBackend
from costwatch.budgets._registry import BudgetRegistry as BudgetRegistry
from costwatch.budgets._window import ROLLING_BUCKETS as ROLLING_BUCKETS
from costwatch.budgets._window import Window as Window
from costwatch.budgets._window import WindowPosition as WindowPosition

P = ParamSpec("P")


def _parameters_of(
    make: Callable[P, Budget],
) -> Callable[[Callable[..., Budget]], Callable[P, Budget]]:
    """Give the decorated function the parameters of ``make`` (for type checkers and
    ``help()``), so that they are written once."""

    def typed(fn: Callable[..., Budget]) -> Callable[P, Budget]:
        signature = inspect.signature(make)
        fn.__signature__ = signature.replace(return_annotation=Budget)  # type: ignore[attr-defined]
        return fn

    return typed


@_parameters_of(Budget)
def budget(*args: Any, **kwargs: Any) -> Budget:
    """Register a budget: ``limit_usd`` per ``window`` for the calls ``match`` selects.

    ``window``: rolling ``"1h"``, ``"24h"``/``"1d"``, ``"7d"`` (any ``<n>m|h|d``) or calendar
    UTC ``"day"``/``"month"``.  ``match`` keys: ``provider``, ``model`` (globs allowed),
    ``stage``, ``strategy`` and any tag (``team``, ``feature``, ``tenant``...); a value may be a
    list (any of).  ``action="block"`` raises :class:`costwatch.BudgetExceeded` before a call
    whose worst-case cost (prompt tokens + ``max_tokens``, else ``default_max_output_tokens``)
    would pass the limit; ``"warn"`` alerts and lets it through.  ``thresholds`` fire once per
    window (across processes with Redis) to ``on_alert``, the log and ``webhook_url``.
    With ``configure(redis_url=...)`` spend is shared by every process through Redis;
    ``on_backend_error`` says what to do while Redis is unreachable, ``on_state_lost`` what
    to do when the budget's spend vanished from Redis (restarted empty, evicted): ``"allow"``
    counts from $0 again, ``"deny"`` refuses calls until the window no longer reaches back to
    the loss; either way the loss is counted (``costwatch_budget_state_lost_total``) and
    alerted.  A call whose worst case is $0 never reserves and is never refused.  Holds of a
    process that died expire ``reservation_ttl_s`` after they were made, by Redis's clock.
    """
    from costwatch._core.runtime import runtime

    new = Budget(*args, **kwargs)
    rt = runtime()
    registry = rt.budgets
    if not registry.has_backend:
        if rt.redis_client is not None:
            registry.use_backend(RedisBudgetBackend(rt.redis_client))
        elif rt.redis_url:
            registry.use_backend(
                RedisBudgetBackend.from_url(
                    rt.redis_url,
                    timeout_s=rt.settings.redis_timeout_s,
                    cluster=rt.settings.redis_cluster,
                )
            )
        else:
            registry.use_backend(MemoryBudgetBackend())
    registry.service = rt.settings.service
    return registry.add(new)


class BudgetStatusError(Exception):
    """``costwatch budget status`` cannot list budgets: no Redis configured, an invalid URL, or
    Redis unreachable.  The message never holds the URL's password."""


@dataclass(frozen=True, slots=True)
class BudgetReading:
    """One budget as ``costwatch budget status`` shows it."""

    name: str
    window: str | None = None
    """The window as defined (``"day"``, ``"1h"``...); ``None``, as every field below, when
    the definition stored in Redis cannot be read."""
    action: str | None = None
    """``"warn"`` or ``"block"``."""
    spent_usd: Decimal | None = None
    """Spent in the current window."""
    reserved_usd: Decimal | None = None
    """Held by calls in flight (reserved, not settled yet)."""
    limit_usd: Decimal | None = None
    resets_at: datetime | None = None
    """UTC.  Calendar window: the end of the period; rolling: when the oldest counted spend
    ages out (``None`` when nothing is counted)."""

    @property
    def used(self) -> Decimal | None:
        """Spent as a fraction of the limit."""
        if self.spent_usd is None or not self.limit_usd:
            return None
        return self.spent_usd / self.limit_usd

    def as_dict(self) -> dict[str, str | None]:
        """Money as decimal strings, the reset time as ISO 8601 UTC."""

        def text(value: object) -> str | None:
            return None if value is None else str(value)

        return {
            "budget": self.name,
            "window": self.window,
            "action": self.action,
            "spent_usd": text(self.spent_usd),
            "reserved_usd": text(self.reserved_usd),
            "limit_usd": text(self.limit_usd),
            "resets_at": None if self.resets_at is None else self.resets_at.isoformat(),
        }


def budget_readings(
    redis_url: str | None,
    *,
    now: float | None = None,
    timeout_s: float = 2.0,
    cluster: bool = False,
) -> list[BudgetReading]:
    """Every budget registered in Redis with its window, spent, reserved (held by calls in
    flight), limit and reset time, sorted by name.

    Raises :class:`BudgetStatusError` when they cannot be read (the command exits non-zero).
    """
    if not redis_url:
        raise BudgetStatusError(
            "costwatch: no Redis configured (set COSTWATCH_REDIS_URL or pass --redis-url); "
            "budgets are shared, and listed, only through Redis."
        )
    where = _redact(redis_url)
    try:
        backend = RedisBudgetBackend.from_url(
            redis_url, timeout_s=timeout_s, cluster=cluster, server_time=now is None
        )
    except ValueError as exc:
        raise BudgetStatusError(f"costwatch: invalid Redis URL {where}: {exc}") from None
    try:
        definitions = backend.definitions()
        moment = time.time() if now is None else now  # Redis's clock unless a moment is given
        return [_reading(name, raw, backend, moment) for name, raw in sorted(definitions.items())]
    except BackendUnavailable as exc:
        raise BudgetStatusError(f"costwatch: Redis at {where} is unreachable: {exc}") from None
    finally:
        backend.close()


def budget_status(
    redis_url: str | None,
    *,
    now: float | None = None,
    timeout_s: float = 2.0,
    cluster: bool = False,
) -> str:
    """The plain text of :func:`budget_readings`, one aligned row per budget."""
    readings = budget_readings(redis_url, now=now, timeout_s=timeout_s, cluster=cluster)
    if not readings:
        return f"costwatch: no budgets are configured in Redis at {_redact(redis_url or '')}."
    header = ("BUDGET", "WINDOW", "ACTION", "SPENT", "RESERVED", "LIMIT", "USED", "RESETS AT (UTC)")
    rows = [status_cells(r) for r in readings]
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]
    return "\n".join(lines)


def status_cells(reading: BudgetReading) -> tuple[str, ...]:
    """A reading's cells under ``BUDGET WINDOW ACTION SPENT RESERVED LIMIT USED RESETS AT``."""
    if reading.window is None:
        return (reading.name, "?", "?", "?", "?", "?", "?", "unreadable definition")
    used = reading.used
    return (
        reading.name,
        reading.window,
        reading.action or "?",
        f"${reading.spent_usd:.6f}",
        f"${reading.reserved_usd:.6f}",
        f"${format_usd(reading.limit_usd or Decimal(0))}",
        "-" if used is None else f"{used * 100:.1f}%",
        "-" if reading.resets_at is None else reading.resets_at.strftime("%Y-%m-%d %H:%M:%S"),
    )


def _reading(name: str, raw: str, backend: RedisBudgetBackend, now: float) -> BudgetReading:
    try:
        definition = json.loads(raw)
        window = Window(str(definition["window"]))
        limit = Decimal(str(definition["limit_usd"]))
        action = str(definition.get("action", "warn"))
    except (ValueError, KeyError, TypeError, ConfigError, InvalidOperation):
        return BudgetReading(name)
    reading = backend.read(BudgetKeys(name), window, int(now * 1000))
    position = window.locate(reading.now_ms / 1000)
    resets = window.resets_at(position, reading.oldest_bucket)
    return BudgetReading(
        name,
        window=window.spec,
        action=action,
        spent_usd=from_nano(reading.spent),
        reserved_usd=from_nano(reading.reserved),
        limit_usd=limit,
        resets_at=utc(resets) if resets is not None else None,
    )


def _redact(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)

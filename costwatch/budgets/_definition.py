"""A budget's definition: ``Budget`` (its arguments validated, limit and thresholds in
nano-dollars, matching and worst-case pricing of a call) and the ``BudgetStatus`` it reports.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from fnmatch import fnmatchcase
from typing import Literal, Protocol

from costwatch._core.errors import ConfigError
from costwatch._core.record import TokenUsage
from costwatch.budgets._alerts import AlertCallback
from costwatch.budgets._backend import BudgetKeys
from costwatch.budgets._match import BudgetCall, compile_match
from costwatch.budgets._money import MAX_LIMIT_USD, femto_prices, to_nano, to_nano_ceiling
from costwatch.budgets._window import Window

Action = Literal["warn", "block"]
BackendPolicy = Literal["allow", "deny"]
StateLostPolicy = Literal["allow", "deny"]


class StatusReader(Protocol):
    """What a registered budget asks its registry (``BudgetRegistry``)."""

    def status(self, name: str) -> BudgetStatus: ...


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


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
        on_state_lost: StateLostPolicy = "allow",
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
        if on_state_lost not in ("allow", "deny"):
            raise ConfigError("on_state_lost", on_state_lost, 'expected "allow" or "deny"')
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
        self._matchers = compile_match(match)
        for key, _, exact, patterns in self._matchers:
            self.match[key] = tuple(sorted(exact)) + patterns
        self.action: Action = action
        self.thresholds = _thresholds(thresholds)
        self.on_alert = _callbacks(on_alert)
        self.on_backend_error: BackendPolicy = on_backend_error
        self.on_state_lost: StateLostPolicy = on_state_lost
        self.deny_lost = on_state_lost == "deny"
        self.webhook_url = webhook_url
        self.default_max_output_tokens = default_max_output_tokens
        self.reservation_ttl_s = float(reservation_ttl_s)
        self.keys = BudgetKeys(name)
        self.limit_nano = to_nano(self.limit_usd)
        self.enforce = action == "block"
        self.hold_ms = int(self.reservation_ttl_s * 1000)
        self.max_hold_nano = self.limit_nano + 1
        """A hold never exceeds this: more than the limit is refused (``block``) or over it
        (``warn``) all the same, and the held total stays exact."""
        self.epoch = ""
        """The epoch of this budget's state in the backend, as last seen (see ``_scripts``)."""
        self.threshold_nanos = tuple(
            (t, to_nano_ceiling(self.limit_usd * Decimal(str(t)))) for t in self.thresholds
        )
        self.last_spent_nano = 0
        """Window spend as last read from the backend (what the gauge shows)."""
        self._fired: dict[str, int] = {}
        self._registry: StatusReader | None = None

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
        exact = femto_prices(price)
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
            "on_state_lost": self.on_state_lost,
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

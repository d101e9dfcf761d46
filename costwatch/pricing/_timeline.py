"""Prices over time: effective-dated entries and time-of-day windows, evaluated per call.

A *layer* answers "the price at UTC second ``ts``" and "the window around ``ts`` in which that
answer does not change".  :class:`Timeline` composes a model's layers and keeps the answer of the
last window it computed, so pricing a call costs two float comparisons until a boundary passes
(the boundaries are precomputed: effective dates, and each day's window edges).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from costwatch.pricing._price import Price
from costwatch.pricing._rules import ALWAYS, PriceRule

DAY = 86_400.0


class Layer(Protocol):
    def at(self, ts: float) -> Price | None: ...

    def window(self, ts: float) -> tuple[float, float]: ...

    @property
    def constant(self) -> bool: ...


def around(
    ts: float, boundaries: Sequence[float], daily: Sequence[float] = ()
) -> tuple[float, float]:
    """``(lo, hi)``: the nearest boundary at or before ``ts`` and the first after it, among the
    fixed ``boundaries`` and each day's ``daily`` seconds-after-midnight (UTC)."""
    lo, hi = -math.inf, math.inf
    for edge in boundaries:
        if edge <= ts:
            lo = max(lo, edge)
        else:
            hi = min(hi, edge)
    if daily:
        midnight = ts - ts % DAY
        for second in daily:
            for edge in (midnight - DAY + second, midnight + second, midnight + DAY + second):
                if edge <= ts:
                    lo = max(lo, edge)
                else:
                    hi = min(hi, edge)
    return lo, hi


@dataclass(frozen=True, slots=True)
class Fixed:
    """One price, whatever the time."""

    price: Price
    constant: bool = True

    def at(self, ts: float) -> Price | None:
        return self.price

    def window(self, ts: float) -> tuple[float, float]:
        return ALWAYS


class Dated:
    """User or bundled rules for one name, each in force in its ``valid_from``/``valid_to``
    window; the first in force wins."""

    def __init__(self, rules: Sequence[PriceRule]) -> None:
        self.rules = tuple(rules)
        self._edges = sorted(
            {e for rule in self.rules for e in (rule.valid_from, rule.valid_to) if math.isfinite(e)}
        )
        self.constant = not self._edges

    def at(self, ts: float) -> Price | None:
        for rule in self.rules:
            if rule.valid_from <= ts < rule.valid_to:
                return rule.price
        return None

    def window(self, ts: float) -> tuple[float, float]:
        return around(ts, self._edges)

    def rule_at(self, ts: float) -> PriceRule | None:
        for rule in self.rules:
            if rule.valid_from <= ts < rule.valid_to:
                return rule
        return None


@dataclass(frozen=True, slots=True)
class Condition:
    """When a conditional price applies: always, from ``start`` (UTC seconds), or daily between
    ``start`` and ``end`` seconds after midnight UTC (wrapping past midnight when end < start)."""

    kind: str  # "always" | "from" | "daily"
    start: float = 0.0
    end: float = 0.0

    def active(self, ts: float) -> bool:
        if self.kind == "always":
            return True
        if self.kind == "from":
            return ts >= self.start
        second = ts % DAY
        if self.end < self.start:
            return second >= self.start or second < self.end
        return self.start <= second < self.end


class Conditional:
    """Prices with conditions, the last active one winning (genai-prices' ``ConditionalPrice``
    list: effective dates and DeepSeek-style time-of-day windows)."""

    def __init__(self, entries: Sequence[tuple[Condition, Price]]) -> None:
        self.entries = tuple(entries)
        self._edges = sorted({c.start for c, _ in self.entries if c.kind == "from"})
        self._daily = sorted(
            {s for c, _ in self.entries if c.kind == "daily" for s in (c.start, c.end)}
        )
        self.constant = len(self.entries) == 1 and self.entries[0][0].kind == "always"

    def at(self, ts: float) -> Price | None:
        for condition, price in reversed(self.entries):
            if condition.active(ts):
                return price
        return self.entries[0][1] if self.entries else None

    def window(self, ts: float) -> tuple[float, float]:
        return around(ts, self._edges, self._daily)


class Timeline:
    """A model's price as a function of time, with the last window's answer kept.

    ``evaluate(ts)`` composes the layers (and whatever is derived from them); ``window(ts)``
    is the time around ``ts`` in which that answer holds.  Thread-safe: the kept window is one
    tuple, replaced whole.
    """

    __slots__ = ("_evaluate", "_kept", "window")
    constant = False

    def __init__(
        self,
        evaluate: Callable[[float], Price | None],
        window: Callable[[float], tuple[float, float]],
    ) -> None:
        self._evaluate = evaluate
        self.window = window
        self._kept: tuple[float, float, Price | None] = (math.inf, -math.inf, None)

    def at(self, ts: float) -> Price | None:
        lo, hi, price = self._kept
        if lo <= ts < hi:
            return price
        lo, hi = self.window(ts)
        price = self._evaluate(ts)
        self._kept = (lo, hi, price)
        return price

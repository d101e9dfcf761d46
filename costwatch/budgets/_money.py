"""Budget amounts as integers: dollars to and from nano-dollars (what the backends count), and
prices in exact femto-dollars so the worst-case cost of a call is computed without ``Decimal``.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING

from costwatch._core.memo import BoundedMemo

if TYPE_CHECKING:
    from costwatch.budgets._match import PriceLike

NANO = Decimal(10**9)
MAX_LIMIT_USD = Decimal(9_000_000)
"""Redis Lua numbers are doubles: nano-dollar sums are exact below 2**53 (~$9.007M)."""


def to_nano(value: Decimal) -> int:
    """Dollars to integer nano-dollars, rounding half to even (charges)."""
    return int((value * NANO).to_integral_value(rounding=ROUND_HALF_EVEN))


def to_nano_ceiling(value: Decimal) -> int:
    """Dollars to integer nano-dollars, rounding up (reservations never under-hold)."""
    return int((value * NANO).to_integral_value(rounding=ROUND_CEILING))


def from_nano(value: int) -> Decimal:
    return Decimal(value).scaleb(-9)


_FEMTO = Decimal(10**15)
_femto_cache: BoundedMemo[int, tuple[object, tuple[int, int, int] | None]] = BoundedMemo(4096)
"""id(price) -> (that price, its femto prices): the price is kept so its id is not reused."""


def femto_prices(price: PriceLike) -> tuple[int, int, int] | None:
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
    _femto_cache.keep(id(price), (price, exact))
    return exact

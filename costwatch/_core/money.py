"""Dollar amounts as text: exact (price tables) or rounded for display, never a false ``$0``."""

from __future__ import annotations

from decimal import Decimal


def format_usd(value: Decimal) -> str:
    """A Decimal without exponent or trailing zeros: ``1.5E-7 * 1e6`` -> ``0.15``."""
    return format(value.normalize(), "f")


def usd(value: Decimal | None, places: int = 4) -> str:
    """``$`` and ``places`` decimals, except that a non-zero amount that would round to zero keeps
    two significant digits (``$0.0000042``, not ``$0.0000``); ``None`` (unpriced) is ``-``."""
    if value is None:
        return "-"
    sign = "-" if value < 0 else ""
    amount = abs(value)
    shown = amount.quantize(Decimal(1).scaleb(-places))
    if not shown and amount:
        shown = amount.quantize(Decimal(1).scaleb(amount.adjusted() - 1)).normalize()
    return f"{sign}${shown:,f}"

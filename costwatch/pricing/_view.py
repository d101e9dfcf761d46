"""What ``costwatch prices MODEL`` shows, as data: one row per rate, each with its source and
the window in which it is in force, and the text rendering of it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from costwatch._core.money import format_usd
from costwatch.pricing._catalog import PriceCatalog
from costwatch.pricing._names import canonical_provider, infer_provider
from costwatch.pricing._price import Price
from costwatch.pricing._timeline import Dated

ROW_LABELS = {
    "input": "input",
    "cache_read": "cache read",
    "cache_write": "cache write (5 min)",
    "cache_write_1h": "cache write (1 hour)",
    "output": "output",
    "reasoning": "reasoning",
    "input_audio": "input (audio)",
    "output_audio": "output (audio)",
}


@dataclass(frozen=True, slots=True)
class PriceRow:
    """One rate: ``item`` (a token type or a fee) under ``condition`` (``""`` = standard;
    ``above 200000 prompt tokens``, ``batch``, ``service_tier=flex``)."""

    item: str
    condition: str
    usd: Decimal
    unit: str
    """``per 1M tokens``, ``per call``, ``per search``, ``multiplier``."""
    note: str
    source: str
    """``price_source`` of a call billed at this rate."""
    provenance: str
    """The page and date the number comes from (bundled), or ``genai-prices data snapshot``."""
    valid_from: datetime | None
    valid_to: datetime | None


@dataclass(frozen=True, slots=True)
class PriceView:
    model: str
    provider: str
    at: datetime
    price: Price | None
    fine_tuned: bool
    valid_from: datetime | None
    valid_to: datetime | None
    rows: tuple[PriceRow, ...]


def _moment(ts: float) -> datetime | None:
    return None if math.isinf(ts) else datetime.fromtimestamp(ts, UTC)


def price_view(
    catalog: PriceCatalog, model: str, provider: str | None = None, at: datetime | None = None
) -> PriceView:
    """The rows of ``costwatch prices MODEL``: every rate of the price in force at ``at``."""
    moment = at or datetime.now(UTC)
    ts = moment.timestamp()
    chosen = provider or ""
    price = catalog.resolve(chosen, model, at=ts)
    resolution = catalog.resolution(chosen, model)
    shown = (
        resolution.provider if resolution is not None else (chosen or infer_provider(model) or "")
    )
    if price is None or resolution is None:
        return PriceView(model, shown, moment, None, catalog.is_fine_tuned(model), None, None, ())
    lo, hi = resolution.window(ts)
    for layer in (resolution.user, resolution.bundled):
        rule = layer.rule_at(ts) if isinstance(layer, Dated) else None
        if rule is not None and rule.price.matched == price.matched:
            lo, hi = max(lo, rule.valid_from), min(hi, rule.valid_to)
            break
    valid_from, valid_to = _moment(lo), _moment(hi)
    window = (valid_from, valid_to)
    rows: list[PriceRow] = []

    def add(item: str, condition: str, usd: Decimal, unit: str, note: str = "") -> None:
        rows.append(
            PriceRow(item, condition, usd, unit, note, price.source, price.provenance, *window)
        )

    def rates(of: Price, condition: str) -> None:
        for kind, (value, note) in of.per_million().items():
            add(ROW_LABELS[kind], condition, value, "per 1M tokens", note)

    rates(price, "")
    if price.per_request:
        add("request", "", price.per_request, "per call")
    if price.per_web_search:
        add("web search", "", price.per_web_search, "per search")
    if price.per_file_search:
        add("file search", "", price.per_file_search, "per search")
    for tier in price.tiers:
        rates(tier.price, f"above {tier.above_prompt_tokens} prompt tokens")
    add("batch", "batch=True", price.batch_discount, "multiplier", "of every token rate")
    for name, tiered in price.service_tiers:
        rates(tiered, f"service_tier={name}")
    fine_tuned = catalog.is_fine_tuned(model) or price.fine_tuned
    return PriceView(
        model,
        canonical_provider(shown),
        moment,
        price,
        fine_tuned,
        valid_from,
        valid_to,
        tuple(rows),
    )


def format_when(value: datetime | None, open_end: str, short: bool = False) -> str:
    """A window's end as ``2025-09-05 16:00 UTC`` (``short``: without the zone); ``open_end``
    for an open one."""
    if value is None:
        return open_end
    return value.strftime("%Y-%m-%d %H:%M" if short else "%Y-%m-%d %H:%M UTC")


def price_header(view: PriceView, price: Price) -> list[str]:
    """What a price is: model, provider, source, where its numbers come from, when it is in
    force, fine-tuned."""
    lines = [
        f"model       {view.model}",
        f"provider    {view.provider}",
        f"source      {price.source}" + (f" ({price.matched})" if price.matched else ""),
    ]
    if price.provenance:
        lines.append(f"from        {price.provenance}")
    lines += [
        f"in force    {format_when(view.valid_from, 'always')} -> "
        f"{format_when(view.valid_to, 'no end')}  (at {format_when(view.at, 'now')})",
        f"fine-tuned  {'yes' if view.fine_tuned else 'no'}",
    ]
    return lines


def format_price_table(
    catalog: PriceCatalog, model: str, provider: str | None = None, at: datetime | None = None
) -> str:
    """Human-readable price of ``model`` (USD per million tokens), its source and fallbacks."""
    view = price_view(catalog, model, provider, at)
    price = view.price
    if price is None:
        chosen = view.provider
        return (
            f"no price known for model {model!r} (provider {chosen or 'unknown'!r}).\n"
            "Its calls are recorded with cost_usd=None and counted in "
            "costwatch_unpriced_requests_total.\n"
            "Add it to a price file (configure(prices=...) or COSTWATCH_PRICES):\n\n"
            "models:\n"
            f"  - provider: {chosen or 'PROVIDER'}\n"
            f"    model: {model}\n"
            "    input_per_mtok: 0.00\n"
            "    output_per_mtok: 0.00\n"
        )
    lines = [*price_header(view, price), "", f"{'token type':<22}USD per 1M tokens"]
    for row in view.rows:
        if row.condition:
            continue
        if row.unit == "per 1M tokens":
            suffix = f"  (= {row.note})" if row.note else ""
            lines.append(f"{row.item:<22}{format_usd(row.usd)}{suffix}")
        elif row.unit == "per call":
            lines.append(f"{'per request':<22}{format_usd(row.usd)} USD per call")
        elif row.unit == "per search":
            lines.append(f"{row.item:<22}{format_usd(row.usd)} USD per search")
    lines.append(f"{'batch':<22}x{format_usd(price.batch_discount)} with batch=True")
    for tier in price.tiers:
        lines.append(f"above {tier.above_prompt_tokens} prompt tokens: {_rates(tier.price)}")
    for name, tiered in price.service_tiers:
        lines.append(f"service_tier={name}: {_rates(tiered)}")
    return "\n".join(lines)


def _rates(price: Price) -> str:
    """A price's per-million rates on one line."""
    rows = price.per_million().items()
    return ", ".join(f"{ROW_LABELS[kind]} {format_usd(value)}" for kind, (value, _) in rows)

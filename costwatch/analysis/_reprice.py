"""``costwatch reprice``: price a period of the record log again, when a price was corrected.

Each call line is priced anew from its token usage with today's catalog (a corrected price in
the user's price file wins, as always); calls at a fixed per-call price keep it.  The result
says, by model, what the period cost as recorded and as re-priced, with the price sources;
``write_to`` writes the re-priced lines (same schema; ``repriced_from`` keeps the old amount).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from costwatch._core.record import ZERO, TokenUsage
from costwatch.accounting._components import context_share
from costwatch.accounting._recordlog import read_record_log
from costwatch.analysis._economics import show
from costwatch.pricing._catalog import PriceCatalog


@dataclass
class RepricedModel:
    provider: str
    model: str
    calls: int = 0
    recorded_usd: Decimal = ZERO
    repriced_usd: Decimal = ZERO
    unpriced_before: int = 0
    unpriced_after: int = 0
    sources_before: set[str] = field(default_factory=set)
    source_after: str = ""

    @property
    def difference_usd(self) -> Decimal:
        return self.repriced_usd - self.recorded_usd


@dataclass
class Repricing:
    models: dict[tuple[str, str], RepricedModel]
    start: float | None
    end: float | None

    @property
    def recorded_usd(self) -> Decimal:
        return sum((m.recorded_usd for m in self.models.values()), ZERO)

    @property
    def repriced_usd(self) -> Decimal:
        return sum((m.repriced_usd for m in self.models.values()), ZERO)

    def render_text(self) -> str:
        rows = [
            f"{'provider/model':<48} {'calls':>7} {'recorded':>14} {'repriced':>14} "
            f"{'difference':>14}  price source (recorded -> now)"
        ]
        for m in sorted(self.models.values(), key=lambda m: (m.provider, m.model)):
            before = ",".join(sorted(m.sources_before)) or "none"
            rows.append(
                f"{m.provider + '/' + m.model:<48} {m.calls:>7} {'$' + show(m.recorded_usd):>14} "
                f"{'$' + show(m.repriced_usd):>14} {'$' + show(m.difference_usd):>14}  "
                f"{before} -> {m.source_after or 'none'}"
            )
        rows.append(
            f"{'total':<48} {'':>7} {'$' + show(self.recorded_usd):>14} "
            f"{'$' + show(self.repriced_usd):>14} "
            f"{'$' + show(self.repriced_usd - self.recorded_usd):>14}"
        )
        return "\n".join(rows) + "\n"

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "recorded_usd": str(self.recorded_usd),
            "repriced_usd": str(self.repriced_usd),
            "models": [
                {
                    "provider": m.provider,
                    "model": m.model,
                    "calls": m.calls,
                    "recorded_usd": str(m.recorded_usd),
                    "repriced_usd": str(m.repriced_usd),
                    "difference_usd": str(m.difference_usd),
                    "price_sources_recorded": sorted(m.sources_before),
                    "price_source_now": m.source_after,
                }
                for m in sorted(self.models.values(), key=lambda m: (m.provider, m.model))
            ],
        }


def reprice_record_log(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    prices: Any = None,
    catalog: PriceCatalog | None = None,
    start: float | None = None,
    end: float | None = None,
    write_to: str | os.PathLike[str] | None = None,
) -> Repricing:
    """Re-price the call lines of a record log between ``start`` and ``end`` (Unix seconds)."""
    catalog = catalog or PriceCatalog(prices)
    result = Repricing({}, start, end)
    out = open(write_to, "wb") if write_to is not None else None  # noqa: SIM115 - closed below
    try:
        for line in read_record_log(paths):
            ts = float(line.get("ts") or 0.0)
            if line["type"] != "call" or (start is not None and ts < start):
                continue
            if end is not None and ts >= end:
                continue
            new_line = _reprice(line, catalog, result)
            if out is not None:
                out.write(orjson.dumps(new_line) + b"\n")
    finally:
        if out is not None:
            out.close()
    return result


def _reprice(line: dict[str, Any], catalog: PriceCatalog, result: Repricing) -> dict[str, Any]:
    key = (line["provider"], line["model"])
    row = result.models.get(key)
    if row is None:
        row = result.models[key] = RepricedModel(*key)
    row.calls += 1
    before = line.get("cost_usd")
    if before is None:
        row.unpriced_before += 1
    else:
        row.recorded_usd += Decimal(before)
    row.sources_before.add(str(line.get("price_source")))
    if line.get("price_source") == "fixed":
        cost: Decimal | None = Decimal(before) if before is not None else None
        input_cost: Decimal | None = ZERO
        source = "fixed"
    else:
        price = catalog.resolve(line["provider"], line["model"])
        if price is None:
            cost = input_cost = None
            source = ""
        else:
            usage = TokenUsage(**line.get("usage", {}))
            cost, input_cost = price.cost_split(usage, 1, bool(line.get("batch")))
            source = price.source
    row.source_after = source
    if cost is None:
        row.unpriced_after += 1
    else:
        row.repriced_usd += cost
    context = line.get("context_tokens") or {}
    prompt = sum(line.get("usage", {}).get(k, 0) for k in ("input", "cache_read", "cache_write"))
    context_cost = (
        {src: str(context_share(input_cost, int(n), prompt)) for src, n in context.items()}
        if input_cost is not None and prompt
        else {}
    )
    return {
        **line,
        "context_cost_usd": context_cost,
        "cost_usd": None if cost is None else str(cost),
        "input_cost_usd": None if input_cost is None else str(input_cost),
        "price_source": source or None,
        "repriced_from": before,
    }

"""The demo's closing table, from ``costwatch.summary()``."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from costwatch.accounting._ledger import Summary, Totals


def _usd(value: Decimal, places: int = 4) -> str:
    return f"${value:,.{places}f}"


def _table(title: str, header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    line = "  ".join("-" * w for w in widths)
    out = [
        title,
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w)
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        ),
        line,
    ]
    for row in rows:
        out.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(out)


def _group_rows(group: dict[str, Totals], total: Decimal) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for name, t in sorted(group.items(), key=lambda kv: kv[1].cost_usd, reverse=True):
        share = float(t.cost_usd / total * 100) if total else 0.0
        tokens = sum(t.tokens.values())
        rows.append(
            (
                name or "-",
                str(t.calls),
                f"{tokens:,}",
                _usd(t.cost_usd),
                f"{share:5.1f}%",
                str(t.unpriced),
            )
        )
    return rows


def render(summary: Summary) -> str:
    total = summary.total_usd
    header = ("", "calls", "tokens", "spend", "share", "unpriced")
    parts = [
        _table(
            "Spend by strategy", ("strategy", *header[1:]), _group_rows(summary.by_strategy, total)
        ),
        _table("Spend by stage", ("stage", *header[1:]), _group_rows(summary.by_stage, total)),
        _table("Spend by model", ("model", *header[1:]), _group_rows(summary.by_model, total)),
        _table(
            "Spend by feature", ("feature", *header[1:]), _group_rows(summary.by_feature, total)
        ),
    ]
    pipelines = [
        (
            name,
            str(p.requests),
            _usd(p.cost_usd),
            _usd(p.cost_per_request_usd, 6),
            ", ".join(f"{s}={n}" for s, n in sorted(p.strategies.items())),
        )
        for name, p in sorted(summary.by_pipeline.items())
    ]
    parts.append(
        _table(
            "Cost per request",
            ("pipeline", "requests", "spend", "per request", "strategy"),
            pipelines,
        )
    )
    gen = summary.by_stage.get("generation")
    context_lines = [
        (source, f"{tokens:,}", _usd(cost))
        for source, (tokens, cost) in sorted(summary.context_by_source.items())
    ]
    parts.append(
        _table("Retrieved context in generation input", ("source", "tokens", "cost"), context_lines)
    )
    if gen is not None:
        parts.append(
            f"retrieved context = {summary.context_share_of_input_cost * 100:.1f}% of generation "
            f"input cost ({_usd(gen.context_cost_usd)} of {_usd(gen.input_cost_usd)})"
        )
    cache_rows = [
        (
            name,
            str(c.hits),
            str(c.misses),
            str(c.errors + c.skips),
            f"{c.hit_rate * 100:.1f}%",
            _usd(c.saved_usd, 6),
        )
        for name, c in sorted(summary.cache.items())
    ]
    parts.append(
        _table(
            "Retrieval cache",
            ("cache", "hits", "misses", "err/skip", "hit rate", "saved"),
            cache_rows,
        )
    )
    parts.append(
        f"TOTAL {_usd(total)} over {summary.total.calls} calls ({summary.total.unpriced} unpriced)"
    )
    return "\n\n".join(parts)

"""The demo's closing tables, from ``costwatch.summary()``, as rich renderables."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from rich.console import Group, RenderableType
from rich.text import Text

from costwatch.accounting._ledger import Summary, Totals
from costwatch.cli._output import table, usd

DEFINITIONS = (
    "A request is one task of the app (answer a question, classify a ticket); "
    "a call is one API call or search made for it (embed, retrieve, generate)."
)
NEXT = (
    "Next: `docker compose up` runs this workload with Prometheus and the Grafana dashboards\n"
    "(http://localhost:3000); `costwatch prices MODEL` and\n"
    "`costwatch estimate --model MODEL FILE` price one model or one prompt."
)


def _section(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Group:
    return Group(Text(title, style="bold"), table(header, rows))


def _group_rows(group: dict[str, Totals], total: Decimal) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for name, t in sorted(group.items(), key=lambda kv: kv[1].cost_usd, reverse=True):
        share = float(t.cost_usd / total * 100) if total else 0.0
        rows.append(
            (
                name or "-",
                str(t.calls),
                f"{sum(t.tokens.values()):,}",
                usd(t.cost_usd),
                f"{share:5.1f}%",
                str(t.unpriced),
            )
        )
    return rows


def render(summary: Summary) -> list[RenderableType]:
    total = summary.total_usd
    columns = ("calls", "tokens", "spend", "share", "unpriced")
    parts: list[RenderableType] = [Text(DEFINITIONS, style="dim")]
    for title, key, group in (
        ("Spend by strategy", "strategy", summary.by_strategy),
        ("Spend by stage", "stage", summary.by_stage),
        ("Spend by model", "model", summary.by_model),
        ("Spend by retrieval source", "source", summary.by_source),
        ("Spend by feature", "feature", summary.by_feature),
    ):
        parts.append(_section(title, (key, *columns), _group_rows(group, total)))
    pipelines = [
        (
            name,
            str(p.requests),
            usd(p.cost_usd),
            usd(p.cost_per_request_usd, 6),
            ", ".join(f"{s}={n}" for s, n in sorted(p.strategies.items())),
        )
        for name, p in sorted(summary.by_pipeline.items())
    ]
    parts.append(
        _section(
            "Cost per request",
            ("pipeline", "requests", "spend", "per request", "strategy"),
            pipelines,
        )
    )
    context_rows = [
        (source, f"{tokens:,}", usd(cost))
        for source, (tokens, cost) in sorted(summary.context_by_source.items())
    ]
    context: list[RenderableType] = [
        _section(
            "Retrieved context in generation input", ("source", "tokens", "cost"), context_rows
        )
    ]
    gen = summary.by_stage.get("generation")
    if gen is not None:
        context.append(
            Text(
                f"retrieved context = {summary.context_share_of_input_cost * 100:.1f}% of "
                f"generation input cost ({usd(gen.context_cost_usd)} of "
                f"{usd(gen.input_cost_usd)})"
            )
        )
    parts.append(Group(*context))
    cache_rows = [
        (
            name,
            str(c.hits),
            str(c.misses),
            str(c.errors + c.skips),
            f"{c.hit_rate * 100:.1f}%",
            usd(c.saved_usd, 6),
        )
        for name, c in sorted(summary.cache.items())
    ]
    parts.append(
        _section(
            "Retrieval cache",
            ("cache", "hits", "misses", "err/skip", "hit rate", "saved"),
            cache_rows,
        )
    )
    parts.append(
        Group(
            Text(
                f"TOTAL {usd(total)} over {summary.total.calls} calls in "
                f"{sum(p.requests for p in summary.by_pipeline.values())} requests "
                f"({summary.total.unpriced} unpriced)",
                style="bold",
            ),
            Text(NEXT),
        )
    )
    return parts

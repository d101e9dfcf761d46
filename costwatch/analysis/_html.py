"""``compare --html``: one self-contained HTML file, charts drawn by Vega-Lite (through Altair,
its JavaScript inlined by ``vl-convert-python``), so it opens with no network.

Per pipeline: monthly cost against monthly volume for each option with the break-even volumes
and the current volume marked, and a stacked bar of each option's cost per successful answer by
component (fresh input, retrieved context, output, embedding, retrieval, rerank, training
amortised, hosting ...); then the tables of figures with their arithmetic.
"""

from __future__ import annotations

import html
import math
from decimal import Decimal
from typing import Any

from costwatch.analysis._economics import Comparison, Option, PipelineComparison, show

_INSTALL_HINT = "the HTML report needs Altair: pip install 'costwatch[report]'"
_STEPS = 40
"""Points per cost line, log-spaced across the volume axis."""


def _altair() -> Any:
    try:
        import altair as alt
        import vl_convert  # noqa: F401 - Altair inlines the Vega JavaScript through it
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return alt


def _volumes(pc: PipelineComparison) -> list[float]:
    marks = [float(pc.monthly_requests)]
    marks += [float(v.break_even_requests) for v in pc.candidates if v.break_even_requests]
    low = max(min(marks) / 20, 1.0)
    high = max(marks) * 20
    step = (math.log10(high) - math.log10(low)) / _STEPS
    return [10 ** (math.log10(low) + i * step) for i in range(_STEPS + 1)]


def _options(pc: PipelineComparison) -> list[Option]:
    return [pc.current, *(v.option for v in pc.candidates)]


def _cost_rows(pc: PipelineComparison) -> list[dict[str, Any]]:
    rows = []
    for option in _options(pc):
        for volume in _volumes(pc):
            v = Decimal(repr(volume))
            rows.append(
                {
                    "option": option.name,
                    "monthly requests": volume,
                    "monthly cost (USD)": float(option.monthly(v)),
                }
            )
    return rows


def _component_rows(pc: PipelineComparison) -> list[dict[str, Any]]:
    volume = pc.monthly_requests
    rows = []
    for order, option in enumerate(_options(pc)):
        if not option.success_rate:
            continue
        successes = volume * option.success_rate
        for figure in option.variable:
            rows.append((order, option.name, figure.label, figure.usd * volume / successes))
        for figure in option.fixed:
            rows.append((order, option.name, figure.label, figure.usd / successes))
    return [
        {
            "order": order,
            "option": name,
            "component": label.replace("_", " "),
            "component_order": _rank(label.replace("_", " ")),
            "USD per successful answer": float(usd),
        }
        for order, name, label, usd in rows
    ]


def _rank(component: str) -> int:
    return _ORDER.index(component) if component in _ORDER else len(_ORDER)


def _marks(pc: PipelineComparison) -> list[dict[str, Any]]:
    marks = [{"volume": float(pc.monthly_requests), "what": "volume now"}]
    for verdict in pc.candidates:
        if verdict.break_even_requests is not None:
            marks.append(
                {
                    "volume": float(verdict.break_even_requests),
                    "what": f"break-even: {verdict.option.name}",
                }
            )
    for i, mark in enumerate(marks):
        mark["label_y"] = 12 + 14 * i  # pixels from the top: labels of close marks stay apart
    return marks


_ORDER = (
    "fresh input",
    "retrieved context",
    "output",
    "embedding",
    "retrieval",
    "rerank",
    "other",
    "training amortised",
    "indexing amortised",
    "hosting",
    "vector store",
)
"""Components in the order (and so the colours) every bar chart uses."""


def _domain(comparison: Comparison) -> list[str]:
    seen = {row["component"] for pc in comparison.pipelines for row in _component_rows(pc)}
    return [c for c in _ORDER if c in seen] + sorted(seen - set(_ORDER))


def _pipeline_charts(alt: Any, pc: PipelineComparison, domain: list[str]) -> Any:
    lines = (
        alt.Chart(alt.Data(values=_cost_rows(pc)))
        .mark_line()
        .encode(
            x=alt.X("monthly requests:Q", scale=alt.Scale(type="log"), title="monthly requests"),
            y=alt.Y("monthly cost (USD):Q", scale=alt.Scale(type="log")),
            color=alt.Color("option:N", legend=alt.Legend(orient="bottom", columns=1)),
        )
    )
    marks = alt.Chart(alt.Data(values=_marks(pc)))
    volume = alt.X("volume:Q", title="monthly requests")
    rules = marks.mark_rule(strokeDash=[4, 4], color="#555").encode(x=volume)
    labels = marks.mark_text(align="left", dx=4, color="#333").encode(
        x=volume, y=alt.Y("label_y:Q", scale=None), text="what:N"
    )
    cost = (lines + rules + labels).properties(
        title=f"{pc.pipeline}: monthly cost against monthly volume", width=380, height=260
    )
    bars = (
        alt.Chart(alt.Data(values=_component_rows(pc)))
        .mark_bar()
        .encode(
            y=alt.Y("option:N", sort=alt.SortField("order"), title=None),
            x=alt.X("sum(USD per successful answer):Q", title="USD per successful answer"),
            color=alt.Color(
                "component:N",
                scale=alt.Scale(domain=domain, scheme="tableau20"),
                legend=alt.Legend(orient="bottom", columns=2),
            ),
            order=alt.Order("component_order:Q"),
            tooltip=["option:N", "component:N", "USD per successful answer:Q"],
        )
        .properties(
            title=f"{pc.pipeline}: cost per successful answer",
            width=300,
            height=40 * (1 + len(pc.candidates)),
        )
    )
    return (
        alt.hconcat(cost, bars)
        .resolve_scale(color="independent")
        .resolve_legend(color="independent")
    )


def _table(pc: PipelineComparison) -> str:
    v = pc.monthly_requests
    head = (
        "<tr><th>option</th><th>strategy</th><th>variable / request</th><th>fixed / month</th>"
        "<th>total / month</th><th>per request</th><th>success rate</th>"
        "<th>per successful answer</th><th>break-even (requests / month)</th>"
        "<th>payback (months)</th></tr>"
    )
    rows = []
    verdicts = {v_.option.name: v_ for v_ in pc.candidates}
    for option in _options(pc):
        verdict = verdicts.get(option.name)
        per_success = option.per_success(v)
        rate = (
            show(option.success_rate * 100) + "%" + (" (assumed)" if option.success_assumed else "")
        )
        cells = [
            option.name,
            option.strategy,
            f"${show(option.variable_per_request)}",
            f"${show(option.fixed_per_month)}",
            f"${show(option.monthly(v))}",
            f"${show(option.per_request(v))}",
            rate,
            "n/a" if per_success is None else f"${show(per_success)}",
            ""
            if verdict is None or verdict.break_even_requests is None
            else show(verdict.break_even_requests),
            ""
            if verdict is None or verdict.payback_months is None
            else show(verdict.payback_months),
        ]
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    explain = []
    for option in _options(pc):
        for figure in (*option.variable, *option.fixed):
            explain.append(
                "<tr>"
                + "".join(
                    f"<td>{html.escape(c)}</td>"
                    for c in (
                        option.name,
                        figure.label,
                        f"${show(figure.usd)}",
                        figure.how,
                        figure.source,
                    )
                )
                + "</tr>"
            )
    return (
        f"<h2>{html.escape(pc.pipeline)}</h2>"
        f"<p>{html.escape(show(v))} requests a month ({html.escape(pc.volume_note)})</p>"
        f"<table class='figures'>{head}{''.join(rows)}</table>"
        "<h3>How each figure was computed</h3>"
        "<table class='explain'><tr><th>option</th><th>component</th><th>USD</th>"
        f"<th>arithmetic</th><th>price source</th></tr>{''.join(explain)}</table>"
    )


_STYLE = (
    "<style>body{font-family:sans-serif;margin:24px}table{border-collapse:collapse;margin:8px 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}"
    "th{background:#f3f3f3}</style>"
)


def render_html(comparison: Comparison) -> str:
    """The whole report as one HTML document that loads nothing from the network."""
    alt = _altair()
    if comparison.pipelines:
        domain = _domain(comparison)
        chart = alt.vconcat(
            *(_pipeline_charts(alt, pc, domain) for pc in comparison.pipelines)
        ).resolve_scale(color="independent")
    else:
        chart = alt.Chart(alt.Data(values=[])).mark_point()
    page: str = chart.to_html(inline=True)
    intro = (
        f"{_STYLE}<h1>RAG or fine-tuning: unit economics</h1>"
        f"<p>traffic: {html.escape(comparison.source)}. A month is 30 days; amounts in USD.</p>"
    )
    tables = "".join(_table(pc) for pc in comparison.pipelines)
    page = page.replace("<body>", "<body>" + intro, 1)
    return page.replace("</body>", tables + "</body>", 1)

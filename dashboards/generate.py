"""Generate the costwatch Grafana dashboards (classic JSON model) from one description.

Run ``python3 dashboards/generate.py`` after editing; it rewrites ``dashboards/*.json``.
``tests/unit/exporters/test_dashboards.py`` fails when the committed JSON differs from this output, and
checks every PromQL expression against a real Prometheus.

Plain Python, no dependencies.  Metric names are the ``costwatch_`` Prometheus names of the
contract in ``costwatch/exporters/names.py``; nothing else is queried.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCHEMA_VERSION = 42
"""Latest classic (v1) dashboard schema, Grafana 12.x."""
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
PROVISIONED_DATASOURCE_UID = "prometheus"

# Label filters driven by the template variables.  Spend metrics carry all four; cache events
# carry service/feature/team/tenant; budgets and internal errors are per service at most.
SPEND = 'service=~"$service", feature=~"$feature", team=~"$team", tenant=~"$tenant"'
SERVICE = 'service=~"$service"'
RATE = "$__rate_interval"
RANGE = "$__range"


# ---------------------------------------------------------------------------------------------
# Building blocks


@dataclass
class Target:
    expr: str
    legend: str = ""
    instant: bool = False
    table: bool = False


@dataclass
class Panel:
    title: str
    kind: str
    targets: list[Target]
    width: int
    height: int
    unit: str = "short"
    description: str = ""
    stack: bool = False
    decimals: int | None = None
    thresholds: list[tuple[float | None, str]] = field(default_factory=list)
    max_value: float | None = None


@dataclass
class Row:
    title: str
    panels: list[Panel]


def _target_json(target: Target, ref: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": target.expr,
        "legendFormat": target.legend or "__auto",
        "range": not target.instant,
        "instant": target.instant,
        "refId": ref,
    }
    if target.table:
        out["format"] = "table"
    return out


def _field_config(panel: Panel) -> dict[str, Any]:
    steps = [
        {"color": color, "value": value} for value, color in (panel.thresholds or [(None, "green")])
    ]
    defaults: dict[str, Any] = {
        "unit": panel.unit,
        "thresholds": {"mode": "absolute", "steps": steps},
        "color": {"mode": "thresholds" if panel.thresholds else "palette-classic"},
    }
    if panel.decimals is not None:
        defaults["decimals"] = panel.decimals
    if panel.max_value is not None:
        defaults["min"] = 0
        defaults["max"] = panel.max_value
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 20 if panel.stack else 0,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if panel.stack else "none", "group": "A"},
        }
    return {"defaults": defaults, "overrides": []}


def _options(panel: Panel) -> dict[str, Any]:
    reduce = {"calcs": ["lastNotNull"], "fields": "", "values": False}
    if panel.kind == "timeseries":
        return {
            "legend": {
                "displayMode": "table",
                "placement": "right",
                "showLegend": True,
                "calcs": ["mean", "max"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    if panel.kind == "stat":
        return {
            "reduceOptions": reduce,
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "textMode": "auto",
            "orientation": "auto",
        }
    if panel.kind == "gauge":
        return {
            "reduceOptions": reduce,
            "showThresholdLabels": False,
            "showThresholdMarkers": True,
            "orientation": "auto",
        }
    if panel.kind == "bargauge":
        return {
            "reduceOptions": reduce,
            "displayMode": "gradient",
            "orientation": "horizontal",
            "showUnfilled": True,
        }
    if panel.kind == "piechart":
        return {
            "reduceOptions": reduce,
            "pieType": "donut",
            "legend": {
                "displayMode": "table",
                "placement": "right",
                "showLegend": True,
                "values": ["value", "percent"],
            },
            "tooltip": {"mode": "single", "sort": "none"},
        }
    if panel.kind == "table":
        return {
            "showHeader": True,
            "cellHeight": "sm",
            "footer": {"show": False, "reducer": ["sum"], "fields": ""},
        }
    raise ValueError(f"unknown panel kind {panel.kind!r}")


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": query,  # the classic string form: every Grafana version reads it
        "refresh": 2,
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "sort": 1,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "hide": 0,
        "skipUrlSync": False,
    }


def _templating() -> dict[str, Any]:
    source = "costwatch_cost_usd_total"
    return {
        "list": [
            {
                "name": "DS_PROMETHEUS",
                "label": "Data source",
                "type": "datasource",
                "query": "prometheus",
                "current": {
                    "selected": False,
                    "text": "Prometheus",
                    "value": PROVISIONED_DATASOURCE_UID,
                },
                "options": [],
                "refresh": 1,
                "regex": "",
                "hide": 0,
                "includeAll": False,
                "multi": False,
                "skipUrlSync": False,
            },
            _variable("service", "Service", f"label_values({source}, service)"),
            _variable("team", "Team", f'label_values({source}{{service=~"$service"}}, team)'),
            _variable(
                "feature",
                "Feature",
                f'label_values({source}{{service=~"$service", team=~"$team"}}, feature)',
            ),
            _variable(
                "tenant",
                "Tenant",
                f'label_values({source}{{service=~"$service", team=~"$team", '
                f'feature=~"$feature"}}, tenant)',
            ),
        ]
    }


def build_dashboard(
    uid: str, title: str, description: str, rows: list[Row], tags: list[str]
) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    next_id = 1
    y = 0
    for row in rows:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        x = 0
        line_height = 0
        for panel in row.panels:
            if x + panel.width > 24:
                x = 0
                y += line_height
                line_height = 0
            refs = "ABCDEFGHIJ"
            panels.append(
                {
                    "id": next_id,
                    "type": panel.kind,
                    "title": panel.title,
                    "description": panel.description,
                    "datasource": DATASOURCE,
                    "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
                    "fieldConfig": _field_config(panel),
                    "options": _options(panel),
                    "targets": [_target_json(t, refs[i]) for i, t in enumerate(panel.targets)],
                }
            )
            next_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["costwatch", "llm", *tags],
        "editable": True,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "refresh": "1m",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-24h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "weekStart": "",
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": [
            {
                "title": "costwatch dashboards",
                "type": "dashboards",
                "tags": ["costwatch"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
                "icon": "external link",
                "targetBlank": False,
                "tooltip": "",
                "url": "",
            }
        ],
        "templating": _templating(),
        "panels": panels,
    }


# ---------------------------------------------------------------------------------------------
# PromQL helpers: one place that spells each query shape


def per_hour(metric: str, by: str, where: str = SPEND) -> str:
    """Dollars (or units) per hour, split by ``by``: the rate over the panel step, times 3600."""
    return f"sum by ({by}) (rate({metric}{{{where}}}[{RATE}])) * 3600"


def in_range(metric: str, by: str = "", where: str = SPEND) -> str:
    """Increase over the dashboard's time range, optionally split by ``by``."""
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (increase({metric}{{{where}}}[{RANGE}]))"


def quantile(q: float, histogram: str, by: str, where: str = SPEND) -> str:
    return (
        f"histogram_quantile({q}, sum by (le, {by}) (rate({histogram}_bucket{{{where}}}[{RATE}])))"
    )


def mean_of(histogram: str, by: str, where: str = SPEND, window: str = RATE) -> str:
    return (
        f"sum by ({by}) (rate({histogram}_sum{{{where}}}[{window}]))\n"
        f"  / sum by ({by}) (rate({histogram}_count{{{where}}}[{window}]))"
    )


COST = "costwatch_cost_usd_total"
TOKENS = "costwatch_tokens_total"
CALLS = "costwatch_requests_total"
DURATION = "costwatch_duration_seconds"
REQUEST_COST = "costwatch_request_cost_usd"
CONTEXT_TOKENS = "costwatch_context_tokens_total"
CONTEXT_COST = "costwatch_context_cost_usd_total"
UNPRICED = "costwatch_unpriced_requests_total"
CACHE_REQUESTS = "costwatch_cache_requests_total"
CACHE_SAVED = "costwatch_cache_saved_usd_total"
BUDGET_SPENT = "costwatch_budget_spent_usd"
BUDGET_LIMIT = "costwatch_budget_limit_usd"
BUDGET_BLOCKED = "costwatch_budget_blocked_total"
INTERNAL_ERRORS = "costwatch_internal_errors_total"
OUTCOMES = "costwatch_outcomes_total"
LIFECYCLE = "costwatch_lifecycle_cost_usd_total"
FIXED_RATE = "costwatch_fixed_cost_usd_per_hour"
PIPELINE_COST = "costwatch_pipeline_cost_usd_total"
PIPELINE_TOKENS = "costwatch_pipeline_tokens_total"
OUTCOME_COST = "costwatch_outcome_cost_usd_total"
SECONDS_TO_MONTH_END = (
    "scalar((days_in_month(vector(time())) - day_of_month(vector(time()))) * 86400"
    " + (24 - hour(vector(time()))) * 3600 - minute(vector(time())) * 60)"
)
"""Seconds from now to the end of the calendar month (UTC)."""

PROMPT_TOKEN_TYPES = 'token_type=~"input|cache_read|cache_write"'
USD = "currencyUSD"
RED_AT_ONE = [(None, "green"), (0.8, "orange"), (1.0, "red")]


def overview() -> dict[str, Any]:
    totals = Row(
        "Totals for the selected range",
        [
            Panel(
                "Spend",
                "stat",
                [Target(in_range(COST), instant=True)],
                4,
                4,
                USD,
                "Dollars spent on priced LLM, embedding, retrieval and rerank calls in the range.",
            ),
            Panel(
                "Spend rate now ($/h)",
                "stat",
                [Target(f"sum(rate({COST}{{{SPEND}}}[{RATE}])) * 3600", "spend per hour")],
                4,
                4,
                USD,
                "Current spend per hour, from the last rate window.",
            ),
            Panel(
                "Calls",
                "stat",
                [Target(in_range(CALLS), instant=True)],
                4,
                4,
                "short",
                "Wrapped provider calls (every stage) in the range.",
            ),
            Panel(
                "Mean cost per request",
                "stat",
                [
                    Target(
                        f"sum(increase({REQUEST_COST}_sum{{{SPEND}}}[{RANGE}]))\n"
                        f"  / sum(increase({REQUEST_COST}_count{{{SPEND}}}[{RANGE}]))",
                        instant=True,
                    )
                ],
                4,
                4,
                USD,
                "Mean dollars per costwatch.request block in the range.",
            ),
            Panel(
                "Unpriced calls",
                "stat",
                [Target(in_range(UNPRICED), instant=True)],
                4,
                4,
                "short",
                "Calls to models with no known price: their cost is unknown, never counted as $0. "
                "Add the model to your price YAML.",
                thresholds=[(None, "green"), (1, "red")],
            ),
            Panel(
                "Saved by cache",
                "stat",
                [Target(in_range(CACHE_SAVED, where=SPEND), instant=True)],
                4,
                4,
                USD,
                "Dollars the retrieval cache saved: what the cached calls cost on their miss.",
            ),
        ],
    )
    attribution = Row(
        "Where the spend comes from ($ per hour)",
        [
            Panel(
                "By strategy (RAG / fine-tuned / hybrid / base)",
                "timeseries",
                [Target(per_hour(COST, "strategy"), "{{strategy}}")],
                12,
                8,
                USD,
                "Spend rate per strategy: compares RAG against fine-tuned and hybrid pipelines.",
                stack=True,
            ),
            Panel(
                "By stage",
                "timeseries",
                [Target(per_hour(COST, "stage"), "{{stage}}")],
                12,
                8,
                USD,
                "Embedding, retrieval, rerank, generation and tool calls.",
                stack=True,
            ),
            Panel(
                "By model (top 10)",
                "timeseries",
                [
                    Target(
                        f"topk(10, {per_hour(COST, 'provider, model')})", "{{provider}} {{model}}"
                    )
                ],
                12,
                8,
                USD,
                "The ten most expensive models right now.",
                stack=True,
            ),
            Panel(
                "By feature",
                "timeseries",
                [Target(per_hour(COST, "feature"), "{{feature}}")],
                12,
                8,
                USD,
                "Spend per product feature (costwatch.tags(feature=...)).",
                stack=True,
            ),
            Panel(
                "By team",
                "timeseries",
                [Target(per_hour(COST, "team"), "{{team}}")],
                12,
                8,
                USD,
                "Spend per owning team.",
                stack=True,
            ),
            Panel(
                "By tenant (top 10)",
                "timeseries",
                [Target(f"topk(10, {per_hour(COST, 'tenant')})", "{{tenant}}")],
                12,
                8,
                USD,
                "The ten most expensive tenants; past the label limit tenants "
                "are folded into 'other'.",
                stack=True,
            ),
        ],
    )
    shares = Row(
        "Shares over the selected range",
        [
            Panel(
                "Spend share by strategy",
                "piechart",
                [Target(in_range(COST, "strategy"), "{{strategy}}", instant=True)],
                8,
                8,
                USD,
            ),
            Panel(
                "Spend share by stage",
                "piechart",
                [Target(in_range(COST, "stage"), "{{stage}}", instant=True)],
                8,
                8,
                USD,
            ),
            Panel(
                "Spend by model",
                "table",
                [
                    Target(
                        f"sort_desc({in_range(COST, 'provider, model, strategy')})",
                        instant=True,
                        table=True,
                    )
                ],
                8,
                8,
                USD,
                "Every priced model in the range with its strategy.",
            ),
        ],
    )
    tokens = Row(
        "Tokens",
        [
            Panel(
                "Tokens per second by token type",
                "timeseries",
                [
                    Target(
                        f"sum by (token_type) (rate({TOKENS}{{{SPEND}}}[{RATE}]))", "{{token_type}}"
                    )
                ],
                12,
                8,
                "short",
                "input (fresh), cache_read, cache_write, output (visible), reasoning: the "
                "partition sums to billed tokens.",
                stack=True,
            ),
            Panel(
                "Tokens in range by model and type",
                "table",
                [
                    Target(
                        f"sort_desc({in_range(TOKENS, 'model, token_type')})",
                        instant=True,
                        table=True,
                    )
                ],
                12,
                8,
                "short",
            ),
        ],
    )
    return build_dashboard(
        "costwatch-overview",
        "costwatch / Spend overview",
        "Where LLM spend comes from: strategy, stage, model, feature, team and tenant.",
        [totals, attribution, shares, tokens],
        ["spend"],
    )


def requests() -> dict[str, Any]:
    per_request = Row(
        "Cost per request (costwatch.request)",
        [
            Panel(
                "Cost per request p50 by pipeline",
                "timeseries",
                [Target(quantile(0.5, REQUEST_COST, "pipeline"), "{{pipeline}}")],
                12,
                8,
                USD,
                "Median dollars per user-facing request (histogram estimate).",
            ),
            Panel(
                "Cost per request p95 by pipeline",
                "timeseries",
                [Target(quantile(0.95, REQUEST_COST, "pipeline"), "{{pipeline}}")],
                12,
                8,
                USD,
                "95th percentile dollars per request: the expensive tail.",
            ),
            Panel(
                "Mean cost per request by strategy",
                "timeseries",
                [Target(mean_of(REQUEST_COST, "strategy"), "{{strategy}}")],
                12,
                8,
                USD,
                "Exact mean (sum / count) per strategy: is fine-tuning cheaper than RAG here?",
            ),
            Panel(
                "Requests per second by pipeline",
                "timeseries",
                [
                    Target(
                        f"sum by (pipeline) (rate({REQUEST_COST}_count{{{SPEND}}}[{RATE}]))",
                        "{{pipeline}}",
                    )
                ],
                12,
                8,
                "reqps",
            ),
        ],
    )
    context = Row(
        "Retrieved context (RAG)",
        [
            Panel(
                "Retrieved-context share of input cost by strategy",
                "timeseries",
                [
                    Target(
                        f"sum by (strategy) (rate({CONTEXT_TOKENS}{{{SPEND}}}[{RATE}]))\n"
                        f'  / sum by (strategy) (rate({TOKENS}{{{SPEND}, stage="generation", '
                        f"{PROMPT_TOKEN_TYPES}}}[{RATE}]))",
                        "{{strategy}}",
                    )
                ],
                12,
                8,
                "percentunit",
                "Context tokens over all prompt-side tokens (input + cache_read + cache_write) "
                "of generation calls. costwatch prices each call's context at that call's "
                "input rate, so per call this is exactly the context's share of input cost; "
                "across models it is token-weighted.",
                max_value=1,
            ),
            Panel(
                "Retrieved-context cost ($/h) by source",
                "timeseries",
                [Target(per_hour(CONTEXT_COST, "source"), "{{source}}")],
                12,
                8,
                USD,
                "Dollars of input cost made by retrieved documents, per retrieval source.",
                stack=True,
            ),
            Panel(
                "Retrieved-context share of generation spend",
                "timeseries",
                [
                    Target(
                        f"sum by (strategy) (rate({CONTEXT_COST}{{{SPEND}}}[{RATE}]))\n"
                        f'  / sum by (strategy) (rate({COST}{{{SPEND}, stage="generation"}}'
                        f"[{RATE}]))",
                        "{{strategy}}",
                    )
                ],
                12,
                8,
                "percentunit",
                "Context dollars over all generation dollars (input and output).",
                max_value=1,
            ),
            Panel(
                "Context tokens per second by source",
                "timeseries",
                [
                    Target(
                        f"sum by (source) (rate({CONTEXT_TOKENS}{{{SPEND}}}[{RATE}]))", "{{source}}"
                    )
                ],
                12,
                8,
                "short",
                stack=True,
            ),
        ],
    )
    calls = Row(
        "Calls: price per call and latency",
        [
            Panel(
                "Cost per 1k calls by model",
                "timeseries",
                [
                    Target(
                        f"1000 * sum by (model) (rate({COST}{{{SPEND}}}[{RATE}]))\n"
                        f"  / sum by (model) (rate({CALLS}{{{SPEND}}}[{RATE}]))",
                        "{{model}}",
                    )
                ],
                12,
                8,
                USD,
            ),
            Panel(
                "Error ratio by stage",
                "timeseries",
                [
                    Target(
                        f'sum by (stage) (rate({CALLS}{{{SPEND}, status="error"}}[{RATE}]))\n'
                        f"  / sum by (stage) (rate({CALLS}{{{SPEND}}}[{RATE}]))",
                        "{{stage}}",
                    )
                ],
                12,
                8,
                "percentunit",
                max_value=1,
            ),
            Panel(
                "Latency p50 / p95 by stage",
                "timeseries",
                [
                    Target(quantile(0.5, DURATION, "stage"), "p50 {{stage}}"),
                    Target(quantile(0.95, DURATION, "stage"), "p95 {{stage}}"),
                ],
                12,
                8,
                "s",
            ),
            Panel(
                "Latency p50 / p95 by model",
                "timeseries",
                [
                    Target(quantile(0.5, DURATION, "model"), "p50 {{model}}"),
                    Target(quantile(0.95, DURATION, "model"), "p95 {{model}}"),
                ],
                12,
                8,
                "s",
            ),
        ],
    )
    return build_dashboard(
        "costwatch-requests",
        "costwatch / Requests, RAG context and latency",
        "Cost per request by pipeline and strategy, the retrieved context's share of input "
        "cost, price per call and latency.",
        [per_request, context, calls],
        ["rag", "latency"],
    )


def operations() -> dict[str, Any]:
    cache = Row(
        "Retrieval cache",
        [
            Panel(
                "Hit rate by cache",
                "timeseries",
                [
                    Target(
                        f'sum by (cache) (rate({CACHE_REQUESTS}{{{SPEND}, result="hit"}}'
                        f"[{RATE}]))\n  / sum by (cache) (rate({CACHE_REQUESTS}{{{SPEND}, "
                        f'result=~"hit|miss"}}[{RATE}]))',
                        "{{cache}}",
                    )
                ],
                8,
                8,
                "percentunit",
                "Hits over hits + misses (errors and skips excluded).",
                max_value=1,
            ),
            Panel(
                "Lookups by result",
                "timeseries",
                [
                    Target(
                        f"sum by (result) (rate({CACHE_REQUESTS}{{{SPEND}}}[{RATE}]))", "{{result}}"
                    )
                ],
                8,
                8,
                "reqps",
                "hit, miss, error (Redis down: acts as a miss) and skip.",
                stack=True,
            ),
            Panel(
                "Dollars saved per hour by cache",
                "timeseries",
                [Target(per_hour(CACHE_SAVED, "cache"), "{{cache}}")],
                8,
                8,
                USD,
                "What the served hits would have cost: each cache learns it from its misses.",
                stack=True,
            ),
        ],
    )
    budgets = Row(
        "Budgets",
        [
            Panel(
                "Budget used (spent / limit)",
                "gauge",
                [
                    Target(
                        f"max by (budget) ({BUDGET_SPENT})\n  / max by (budget) ({BUDGET_LIMIT})",
                        "{{budget}}",
                        instant=True,
                    )
                ],
                12,
                8,
                "percentunit",
                "Share of each budget's current window already spent.",
                thresholds=RED_AT_ONE,
                max_value=1.2,
            ),
            Panel(
                "Spent vs limit",
                "bargauge",
                [
                    Target(f"max by (budget) ({BUDGET_SPENT})", "{{budget}} spent", instant=True),
                    Target(f"max by (budget) ({BUDGET_LIMIT})", "{{budget}} limit", instant=True),
                ],
                12,
                8,
                USD,
            ),
            Panel(
                "Spend vs limit over time",
                "timeseries",
                [
                    Target(f"max by (budget) ({BUDGET_SPENT})", "{{budget}} spent"),
                    Target(f"max by (budget) ({BUDGET_LIMIT})", "{{budget}} limit"),
                ],
                12,
                8,
                USD,
            ),
            Panel(
                "Blocked calls by budget",
                "timeseries",
                [Target(f"sum by (budget) (increase({BUDGET_BLOCKED}[{RATE}]))", "{{budget}}")],
                12,
                8,
                "short",
                'Calls refused with BudgetExceeded (action="block").',
                stack=True,
            ),
        ],
    )
    health = Row(
        "Data quality and costwatch health",
        [
            Panel(
                "Unpriced calls by model",
                "table",
                [
                    Target(
                        f"sort_desc({in_range(UNPRICED, 'provider, model')} > 0)",
                        instant=True,
                        table=True,
                    )
                ],
                8,
                8,
                "short",
                "Models with no price (cost unknown, never reported as $0): add them to the "
                "price YAML.",
            ),
            Panel(
                "Unpriced calls per second",
                "timeseries",
                [Target(f"sum by (model) (rate({UNPRICED}{{{SPEND}}}[{RATE}]))", "{{model}}")],
                8,
                8,
                "reqps",
            ),
            Panel(
                "costwatch internal errors by component",
                "timeseries",
                [
                    Target(
                        f"sum by (component) (rate({INTERNAL_ERRORS}{{{SERVICE}}}[{RATE}]))",
                        "{{component}}",
                    )
                ],
                8,
                8,
                "reqps",
                "costwatch's own failures, swallowed so the host call is unaffected. Should be 0.",
                stack=True,
            ),
        ],
    )
    return build_dashboard(
        "costwatch-operations",
        "costwatch / Cache, budgets and health",
        "Retrieval cache hit rate and dollars saved, budgets against their limits, unpriced "
        "calls and costwatch's own errors.",
        [cache, budgets, health],
        ["cache", "budget"],
    )


def unit_economics() -> dict[str, Any]:
    by = "pipeline, strategy"
    success = f'{OUTCOMES}{{{SPEND}, outcome="success"}}'
    variable = f"sum by (pipeline) (rate({REQUEST_COST}_sum{{{SPEND}}}[{RATE}])) * 3600"
    fixed = f"sum by (pipeline) (max by (pipeline, name) ({FIXED_RATE}{{{SPEND}}}))"
    unit_costs = Row(
        "Cost per request and per successful answer",
        [
            Panel(
                "Cost per request by pipeline and strategy",
                "timeseries",
                [Target(mean_of(REQUEST_COST, by), "{{pipeline}} ({{strategy}})")],
                8,
                8,
                USD,
                "Exact mean dollars per costwatch.request (sum / count).",
            ),
            Panel(
                "Cost per successful answer by pipeline and strategy",
                "timeseries",
                [
                    Target(
                        f"sum by ({by}) (rate({REQUEST_COST}_sum{{{SPEND}}}[{RATE}]))\n"
                        f"  / sum by ({by}) (rate({success}[{RATE}]))",
                        "{{pipeline}} ({{strategy}})",
                    )
                ],
                8,
                8,
                USD,
                "The cost of ALL the pipeline's requests divided by the successful ones (the "
                "cost of pass): the fair unit to compare RAG with fine-tuning.",
            ),
            Panel(
                "Success rate by pipeline and strategy",
                "timeseries",
                [
                    Target(
                        f"sum by ({by}) (rate({success}[{RATE}]))\n"
                        f"  / sum by ({by}) (rate({OUTCOMES}{{{SPEND}}}[{RATE}]))",
                        "{{pipeline}} ({{strategy}})",
                    )
                ],
                8,
                8,
                "percentunit",
                "Successful requests over requests given an outcome (req.outcome or "
                "costwatch.outcome by request id).",
                max_value=1,
            ),
            Panel(
                "Dollars per hour spent on failed requests by pipeline",
                "timeseries",
                [
                    Target(
                        f'sum by (pipeline) (rate({OUTCOME_COST}{{{SPEND}, outcome="failure"}}'
                        f"[{RATE}])) * 3600",
                        "{{pipeline}}",
                    )
                ],
                12,
                6,
                USD,
                "What answers that did not help cost: the gap between cost per request and "
                "cost per successful answer.",
                stack=True,
            ),
            Panel(
                "Loaded cost per successful answer (fixed costs included)",
                "bargauge",
                [
                    Target(
                        f"(\n  {variable}\n    + on (pipeline) {fixed}\n  or {variable}\n)"
                        f"\n  / (sum by (pipeline) (rate({success}[{RATE}])) * 3600)",
                        "{{pipeline}}",
                        instant=True,
                    )
                ],
                12,
                6,
                USD,
                "Variable dollars per hour plus the declared fixed costs per hour, over successes "
                "per hour (as the recording rule pipeline:costwatch_loaded_cost_per_success_usd:1h "
                "of costwatch-unit-economics.yml).",
            ),
        ],
    )
    fixed_variable = Row(
        "Fixed against variable cost",
        [
            Panel(
                "Variable and fixed dollars per hour by pipeline",
                "timeseries",
                [
                    Target(variable, "{{pipeline}} variable"),
                    Target(fixed, "{{pipeline}} fixed"),
                ],
                12,
                8,
                USD,
                "Variable: the requests' calls.  Fixed: declared hosting, GPU nodes and vector "
                "stores (costwatch.fixed_cost), counted once per name however many processes "
                "declare them.",
                stack=True,
            ),
            Panel(
                "Declared fixed costs ($ per hour)",
                "table",
                [
                    Target(
                        f"max by (name, kind, strategy, pipeline) ({FIXED_RATE}{{{SPEND}}})",
                        instant=True,
                        table=True,
                    )
                ],
                12,
                8,
                USD,
            ),
            Panel(
                "Lifecycle costs recorded (training, indexing runs)",
                "table",
                [
                    Target(
                        f"sum by (kind, name, pipeline) (max_over_time({LIFECYCLE}{{{SPEND}}}"
                        f"[{RANGE}]))",
                        instant=True,
                        table=True,
                    )
                ],
                12,
                8,
                USD,
                "One-off costs that are not calls (costwatch.record_training, "
                "costwatch.indexing), to date.  costwatch compare amortises them.",
            ),
            Panel(
                "Variable cost by component ($ per hour)",
                "timeseries",
                [
                    Target(
                        f"sum by (component) (rate({PIPELINE_COST}{{{SERVICE}}}[{RATE}])) * 3600",
                        "{{component}}",
                    )
                ],
                12,
                8,
                USD,
                "Fresh input, retrieved context, output, embedding, retrieval, rerank: what "
                "each pipeline's requests pay for.",
                stack=True,
            ),
        ],
    )
    context_budgets = Row(
        "Retrieved context and the month",
        [
            Panel(
                "Tokens per request by pipeline and component",
                "timeseries",
                [
                    Target(
                        f"sum by (pipeline, component) (rate({PIPELINE_TOKENS}{{{SERVICE}}}"
                        f"[{RATE}]))\n  / on (pipeline) group_left sum by (pipeline) "
                        f"(rate({REQUEST_COST}_count{{{SPEND}}}[{RATE}]))",
                        "{{pipeline}} {{component}}",
                    )
                ],
                24,
                8,
                "short",
                "The traffic profile a what-if starts from: fresh input, retrieved context and "
                "output tokens of each pipeline's requests.",
            ),
            Panel(
                "Retrieved-context share of input cost by pipeline",
                "timeseries",
                [
                    Target(
                        f'sum by (pipeline) (rate({PIPELINE_COST}{{{SERVICE}, component="'
                        f'retrieved_context"}}[{RATE}]))\n  / sum by (pipeline) (rate('
                        f'{PIPELINE_COST}{{{SERVICE}, component=~"fresh_input|retrieved_context"}}'
                        f"[{RATE}]))",
                        "{{pipeline}}",
                    )
                ],
                8,
                8,
                "percentunit",
                "What fine-tuning would save first: the input dollars spent on retrieved context.",
                max_value=1,
            ),
            Panel(
                "Budget spend this window and month-end projection",
                "timeseries",
                [
                    Target(f"max by (budget) ({BUDGET_SPENT})", "{{budget}} spent"),
                    Target(
                        f"max by (budget) (predict_linear({BUDGET_SPENT}[1h], "
                        f"{SECONDS_TO_MONTH_END}))",
                        "{{budget}} at month end",
                    ),
                    Target(f"max by (budget) ({BUDGET_LIMIT})", "{{budget}} limit"),
                ],
                8,
                8,
                USD,
                "Each budget's spend (month to date for monthly budgets), where the trend of the "
                "last hour puts it at the end of the month, and its limit.",
            ),
            Panel(
                "Spend to month end at the current rate",
                "stat",
                [
                    Target(
                        f"sum(rate({COST}{{{SPEND}}}[{RATE}])) * {SECONDS_TO_MONTH_END}",
                        "to month end",
                    )
                ],
                8,
                8,
                USD,
                "Variable spend from now to the end of the month if the current rate holds.",
            ),
        ],
    )
    return build_dashboard(
        "costwatch-unit-economics",
        "Unit economics: RAG vs fine-tuned",
        "Cost per request and per successful answer by pipeline and strategy, fixed against "
        "variable cost, lifecycle costs, retrieved-context share, the month's projection.  "
        "Decide with `costwatch compare`.",
        [unit_costs, fixed_variable, context_budgets],
        ["costwatch", "llm", "cost", "unit-economics"],
    )


DASHBOARDS = {
    "costwatch-overview.json": overview,
    "costwatch-requests.json": requests,
    "costwatch-operations.json": operations,
    "costwatch-unit-economics.json": unit_economics,
}


def render() -> dict[str, str]:
    """File name -> JSON text, exactly as committed."""
    return {
        name: json.dumps(build(), indent=2, sort_keys=True) + "\n"
        for name, build in DASHBOARDS.items()
    }


def main(argv: list[str]) -> int:
    out_dir = Path(argv[1]) if len(argv) > 1 else HERE
    for name, text in render().items():
        (out_dir / name).write_text(text, encoding="utf-8")
        print(f"wrote {out_dir / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

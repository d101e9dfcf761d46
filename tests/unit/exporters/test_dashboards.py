"""The Grafana dashboards: what they are made of, what they answer, and that their PromQL parses.

Every expression is evaluated by a real Prometheus (one server for the module): ``promtool`` has
no expression check, and a query Grafana cannot run is a blank panel nobody notices.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from costwatch.exporters import names
from tests._fixtures.grafana_dashboards import (
    DASHBOARD_DIR,
    METRIC_NAME,
    all_panels,
    concrete,
    load_dashboards,
    queries,
    query_panels,
)

DASHBOARDS = load_dashboards()
QUERIES = queries(DASHBOARDS)
TEMPLATE_FILTERS = ("service", "team", "feature", "tenant")


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "costwatch_dashboards_generate", DASHBOARD_DIR / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in query_panels(dashboard) for t in p["targets"]]


def _panels_matching(pattern: str) -> list[tuple[str, str]]:
    regex = re.compile(pattern, re.S)
    return [
        (name, panel["title"])
        for name, dashboard in DASHBOARDS.items()
        for panel in query_panels(dashboard)
        if any(regex.search(t["expr"]) for t in panel["targets"])
    ]


# --- structure ---------------------------------------------------------------------------------


def test_the_committed_json_is_exactly_what_the_generator_writes() -> None:
    rendered = _generator().render()
    assert sorted(rendered) == sorted(DASHBOARDS), "dashboards/*.json and generate.py disagree"
    for name, text in rendered.items():
        assert (DASHBOARD_DIR / name).read_text(encoding="utf-8") == text, (
            f"{name} is stale: run python3 dashboards/generate.py"
        )


def test_there_are_dashboards_and_each_has_a_unique_uid_and_title() -> None:
    assert len(DASHBOARDS) >= 3
    uids = [d["uid"] for d in DASHBOARDS.values()]
    titles = [d["title"] for d in DASHBOARDS.values()]
    assert len(set(uids)) == len(uids)
    assert len(set(titles)) == len(titles)
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", uid) for uid in uids)


def test_every_dashboard_uses_the_current_classic_schema() -> None:
    for name, dashboard in DASHBOARDS.items():
        assert dashboard["schemaVersion"] == 42, name
        assert dashboard.get("id") is None, f"{name}: Grafana assigns the numeric id"
        assert "costwatch" in dashboard["tags"], name


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panel_ids_are_unique_within_a_dashboard(name: str) -> None:
    ids = [panel["id"] for panel in all_panels(DASHBOARDS[name])]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {name}"


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_panel_has_a_promql_target_on_the_prometheus_variable(name: str) -> None:
    panels = query_panels(DASHBOARDS[name])
    assert panels
    for panel in panels:
        assert panel["targets"], f"{panel['title']} has no query"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        for target in panel["targets"]:
            assert target["expr"].strip(), f"{panel['title']} {target['refId']} is empty"
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panels_fit_the_grid_without_overlapping(name: str) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in all_panels(DASHBOARDS[name]):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_service_team_feature_and_tenant_are_multi_select_variables(name: str) -> None:
    variables = {v["name"]: v for v in DASHBOARDS[name]["templating"]["list"]}
    datasource = variables["DS_PROMETHEUS"]
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"
    assert datasource["current"]["value"] == "prometheus", "default must be the provisioned uid"
    for label in TEMPLATE_FILTERS:
        variable = variables[label]
        assert variable["type"] == "query"
        assert variable["includeAll"] and variable["multi"] and variable["allValue"] == ".*"
        assert re.fullmatch(
            rf"label_values\(costwatch_[a-z_]+(\{{.*\}})?, {label}\)", variable["definition"]
        ), variable["definition"]


def test_spend_panels_honour_every_template_filter() -> None:
    spend_metrics = (
        "costwatch_cost_usd_total",
        "costwatch_tokens_total",
        "costwatch_request_cost_usd",
        "costwatch_context_",
    )
    for query in QUERIES:
        for selector in re.findall(r"(costwatch_[a-z_]+)\{([^}]*)\}", query.expr):
            metric, matchers = selector
            if metric.startswith(spend_metrics):
                for label in TEMPLATE_FILTERS:
                    assert f'{label}=~"${label}"' in matchers, f"{query}: {metric} ignores ${label}"


def test_dashboards_reference_only_metrics_of_the_contract() -> None:
    contract = {
        series
        for spec in names.PROMETHEUS_METRICS
        if not spec.extension
        for series in spec.series_names()
    }
    referenced = {m for d in DASHBOARDS.values() for e in _exprs(d) for m in METRIC_NAME.findall(e)}
    referenced |= {
        m
        for d in DASHBOARDS.values()
        for v in d["templating"]["list"]
        for m in METRIC_NAME.findall(v.get("definition", ""))
    }
    assert referenced, "no costwatch metric referenced at all"
    assert referenced <= contract, f"not in the contract: {sorted(referenced - contract)}"


def test_every_contract_metric_is_on_some_dashboard() -> None:
    referenced = {m for d in DASHBOARDS.values() for e in _exprs(d) for m in METRIC_NAME.findall(e)}
    for spec in names.PROMETHEUS_METRICS:
        if not spec.extension:
            assert referenced & set(spec.series_names()), f"{spec.name} is never shown"


def _groupings(expr: str) -> Iterator[tuple[list[str], str]]:
    """Each ``by (labels) (body)`` of an expression, with its parenthesised body."""
    for match in re.finditer(r"by \(([^)]*)\) \(", expr):
        depth, end = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(expr[end], 0)
            end += 1
        yield [g.strip() for g in match[1].split(",")], expr[match.end() : end - 1]


def test_grouping_labels_exist_on_the_metric_they_group() -> None:
    by_metric = {
        series: spec.labels for spec in names.PROMETHEUS_METRICS for series in spec.series_names()
    }
    checked = 0
    for query in QUERIES:
        for grouping, inner in _groupings(query.expr):
            metrics = METRIC_NAME.findall(inner)
            checked += len(metrics)
            for metric in metrics:
                labels = set(by_metric[metric]) | ({"le"} if metric.endswith("_bucket") else set())
                for label in grouping:
                    assert label in labels, f"{query}: {metric} has no label {label!r}"
    assert checked, "no grouping was checked"


# --- what the dashboards answer ------------------------------------------------------------

QUESTIONS = {
    "spend per hour by strategy": (
        r"sum by \(strategy\) \(rate\(costwatch_cost_usd_total\{.*\) \* 3600"
    ),
    "spend per hour by stage": r"sum by \(stage\) \(rate\(costwatch_cost_usd_total\{.*\* 3600",
    "spend per hour by model": r"sum by \(provider, model\) \(rate\(costwatch_cost_usd_total",
    "spend per hour by feature": r"sum by \(feature\) \(rate\(costwatch_cost_usd_total",
    "spend per hour by team": r"sum by \(team\) \(rate\(costwatch_cost_usd_total",
    "spend per hour by tenant": r"sum by \(tenant\) \(rate\(costwatch_cost_usd_total",
    "cost per request p95 by pipeline": r"histogram_quantile\(0\.95, sum by \(le, pipeline\) "
    r"\(rate\(costwatch_request_cost_usd_bucket",
    "cost per request p50 by pipeline": r"histogram_quantile\(0\.5, sum by \(le, pipeline\) "
    r"\(rate\(costwatch_request_cost_usd_bucket",
    "tokens by token type": r"sum by \(token_type\) \(rate\(costwatch_tokens_total",
    "retrieved-context share of input": r"costwatch_context_tokens_total.*\n\s*/ .*"
    r"costwatch_tokens_total\{.*stage=\"generation\", "
    r"token_type=~\"input\|cache_read\|cache_write\"",
    "retrieved-context dollars": r"costwatch_context_cost_usd_total",
    "cache hit rate": r"costwatch_cache_requests_total\{[^}]*result=\"hit\"\}.*\n\s*/ .*"
    r"costwatch_cache_requests_total\{[^}]*result=~\"hit\|miss\"\}",
    "dollars saved by the cache": r"rate\(costwatch_cache_saved_usd_total",
    "budget spent vs limit": r"costwatch_budget_spent_usd\)\n\s*/ max by \(budget\) "
    r"\(costwatch_budget_limit_usd\)",
    "unpriced requests": r"costwatch_unpriced_requests_total",
    "internal errors": r"sum by \(component\) \(rate\(costwatch_internal_errors_total",
    "p50 latency": r"histogram_quantile\(0\.5, .*costwatch_duration_seconds_bucket",
    "p95 latency": r"histogram_quantile\(0\.95, .*costwatch_duration_seconds_bucket",
    "cost per successful answer by pipeline and strategy": r"sum by \(pipeline, strategy\) "
    r"\(rate\(costwatch_request_cost_usd_sum\{.*\n\s*/ sum by \(pipeline, strategy\) "
    r"\(rate\(costwatch_outcomes_total\{[^}]*outcome=\"success\"",
    "fixed costs counted once per name": r"max by \(pipeline, name\) "
    r"\(costwatch_fixed_cost_usd_per_hour",
    "lifecycle costs": r"costwatch_lifecycle_cost_usd_total",
    "month-end projection per budget": r"predict_linear\(costwatch_budget_spent_usd",
}


@pytest.mark.parametrize("question", sorted(QUESTIONS))
def test_a_panel_answers(question: str) -> None:
    assert _panels_matching(QUESTIONS[question]), f"no panel answers: {question}"


def test_the_budget_gauge_turns_red_at_the_limit() -> None:
    gauges = [
        p
        for d in DASHBOARDS.values()
        for p in query_panels(d)
        if p["type"] == "gauge" and "costwatch_budget_limit_usd" in p["targets"][0]["expr"]
    ]
    assert gauges
    steps = gauges[0]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1] == {"color": "red", "value": 1.0}
    assert gauges[0]["fieldConfig"]["defaults"]["unit"] == "percentunit"


# --- PromQL templating (the expressions themselves are checked by a real Prometheus in
# tests/integration/exporters/test_dashboards_promql.py) ------------------------------


def test_grafana_variables_become_match_all_regexes_and_real_durations() -> None:
    expr = (
        'sum by (team) (rate(costwatch_cost_usd_total{service=~"$service", '
        'tenant=~"${tenant}"}[$__rate_interval])) / increase(x[$__range])'
    )
    assert concrete(expr) == (
        'sum by (team) (rate(costwatch_cost_usd_total{service=~".*", '
        'tenant=~".*"}[5m])) / increase(x[5m])'
    )
